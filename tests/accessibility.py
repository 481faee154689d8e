"""Accessibility checks run in the browser on every page the browser tests open, so that the
console stays usable with a keyboard and a screen reader on a hospital workstation: every form
control has a label, every link and button a name, the page a language, a title and one main
heading, no id twice, no positive tabindex; and Tab reaches every visible control (a group of
radio buttons once), each showing a focus outline. Plain DOM queries: nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea, summary"

_STATIC_CHECKS = """
() => {
  const problems = [];
  const text = (el) => (el ? (el.textContent || "").trim() : "");
  const named = (el) => {
    const by = el.getAttribute("aria-labelledby");
    if (by && by.split(/\\s+/).every((id) => text(document.getElementById(id)))) return true;
    return (el.getAttribute("aria-label") || "").trim() !== "";
  };
  for (const c of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const forLabel = c.id && Array.from(document.querySelectorAll("label"))
      .some((l) => l.htmlFor === c.id && text(l));
    if (!(forLabel || text(c.closest("label")) || named(c))) {
      problems.push("form control without a label: " + (c.name || c.id || c.type));
    }
  }
  for (const el of document.querySelectorAll("a[href], button, summary")) {
    if (!(text(el) || named(el) || el.querySelector("img[alt]:not([alt=''])"))) {
      problems.push("a " + el.tagName.toLowerCase() + " without a name");
    }
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push("an image without alt text");
  }
  for (const svg of document.querySelectorAll("svg[role=img]")) {
    if (!named(svg)) problems.push("a chart without a name");
  }
  if (!document.documentElement.lang) problems.push("the page has no lang");
  if (!document.title.trim()) problems.push("the page has no title");
  const h1 = document.querySelectorAll("h1").length;
  if (h1 !== 1) problems.push("the page has " + h1 + " h1 headings");
  const ids = new Map();
  for (const el of document.querySelectorAll("[id]")) ids.set(el.id, (ids.get(el.id) || 0) + 1);
  for (const [id, n] of ids) if (n > 1) problems.push("id used " + n + " times: " + id);
  for (const el of document.querySelectorAll("[tabindex]")) {
    if (parseInt(el.getAttribute("tabindex"), 10) > 0) problems.push("a positive tabindex");
  }
  return problems;
}
"""

_MARK_FOCUSABLE = """
(selector) => {
  const out = [];
  const radioGroups = new Map();  // Tab stops once in a group of radio buttons (arrows move on)
  for (const el of document.querySelectorAll(selector)) {
    if (el.disabled || el.getClientRects().length === 0) continue;
    const form = Array.from(document.forms).indexOf(el.form);
    const group = el.type === "radio" ? form + "/" + el.name : null;
    if (group !== null && radioGroups.has(group)) {
      el.dataset.a11y = radioGroups.get(group);
      continue;
    }
    el.dataset.a11y = String(out.length);
    if (group !== null) radioGroups.set(group, el.dataset.a11y);
    out.push(el.tagName.toLowerCase() + " " + (el.textContent || el.name || el.id || "").trim());
  }
  return out;
}
"""

# Tab starts after the focused element: focus a (not tabbable) first element of the page.
_START_AT_THE_TOP = """
() => {
  const start = document.createElement("span");
  start.tabIndex = -1;
  document.body.prepend(start);
  start.focus();
}
"""

_FOCUSED = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body || !el.dataset || el.dataset.a11y === undefined) return null;
  return [el.dataset.a11y, getComputedStyle(el).outlineStyle];
}
"""


def accessibility_problems(page: Any) -> list[str]:
    """What keeps the page open in ``page`` from being used by keyboard or screen reader."""
    url = page.url
    problems: list[str] = [f"{url}: {p}" for p in page.evaluate(_STATIC_CHECKS)]
    controls: list[str] = page.evaluate(_MARK_FOCUSABLE, FOCUSABLE)
    page.evaluate(_START_AT_THE_TOP)
    reached: set[int] = set()
    for _ in range(len(controls) + 3):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None:
            if reached:
                break  # Tab left the page
            continue
        index, outline = int(focused[0]), focused[1]
        if index in reached:
            break  # round again
        reached.add(index)
        if outline == "none":
            problems.append(f"{url}: no visible focus on {controls[index]}")
    for index, control in enumerate(controls):
        if index not in reached:
            problems.append(f"{url}: Tab never reaches {control}")
    return problems
