"""The compiled profile: data-driven, complete, options, presets and site-rule checks."""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword

from dicomdrop.config import DeidSettings, PrivateKeepRule, SiteRule
from dicomdrop.deid.profile import compile_profile, resolve_compound
from dicomdrop.deid.table import load_table, parse_table_tag
from dicomdrop.errors import ConfigError


def tag(keyword: str) -> int:
    found = tag_for_keyword(keyword)
    assert found is not None
    return int(found)


def test_shipped_table_has_621_entries_and_profile_accounts_for_each():
    entries = load_table()
    assert len(entries) == 621
    profile = compile_profile(DeidSettings())
    assert set(profile.accounted) == {e.tag for e in entries}
    for entry in entries:
        if entry.is_private_row:
            assert profile.accounted[entry.tag] == "private"
            continue
        mask, value = parse_table_tag(entry.tag)
        expected = profile.accounted[entry.tag]
        if entry.is_pattern:
            assert any(r.mask == mask and r.value == value for r in profile.repeaters)
        else:
            assert profile.actions[value] == expected
        if value not in (0x00100010, 0x00100020):
            assert expected == resolve_compound(entry.basic)


@pytest.mark.parametrize(
    ("code", "action"),
    [("X/Z", "Z"), ("X/D", "D"), ("Z/D", "D"), ("X/Z/D", "D"), ("X/Z/U*", "U"), ("K", "K")],
)
def test_compound_codes_resolve_by_one_rule(code, action):
    assert resolve_compound(code) == action


def test_repeating_groups_match_by_mask():
    profile = compile_profile(DeidSettings())
    assert profile.action_for(0x50100110) == "X"  # curve data, any element
    assert profile.action_for(0x60023000) == "X"  # overlay data
    assert profile.action_for(0x601E4000) == "X"  # overlay comments
    assert profile.action_for(0x60020010) == "K"  # overlay rows: not listed


def test_patient_name_and_id_become_the_pseudonym_in_every_preset():
    for preset in ("basic", "research", "names-only"):
        profile = compile_profile(DeidSettings(profile=preset))
        assert profile.action_for(tag("PatientName")) == "P"
        assert profile.action_for(tag("PatientID")) == "P"


def test_options_take_the_table_columns():
    basic = compile_profile(DeidSettings())
    assert basic.action_for(tag("StudyInstanceUID")) == "U"
    assert (
        compile_profile(DeidSettings(retain_uids=True)).action_for(tag("StudyInstanceUID")) == "K"
    )
    assert basic.action_for(tag("StationName")) == "D"
    assert (
        compile_profile(DeidSettings(retain_device_identity=True)).action_for(tag("StationName"))
        == "K"
    )
    assert (
        compile_profile(DeidSettings(retain_institution_identity=True)).action_for(
            tag("InstitutionName")
        )
        == "K"
    )
    assert (
        compile_profile(DeidSettings(retain_patient_characteristics=True)).action_for(
            tag("PatientSex")
        )
        == "K"
    )
    assert (
        compile_profile(DeidSettings(retain_long_full_dates=True)).action_for(tag("StudyDate"))
        == "K"
    )
    assert (
        compile_profile(DeidSettings(retain_long_modified_dates=True)).action_for(tag("StudyDate"))
        == "C"
    )
    assert (
        compile_profile(DeidSettings(clean_descriptors=True)).action_for(tag("StudyDescription"))
        == "C"
    )
    assert (
        compile_profile(DeidSettings(clean_structured_content=True)).action_for(
            tag("ContentSequence")
        )
        == "C"
    )
    assert compile_profile(DeidSettings(clean_graphics=True)).action_for(0x60003000) == "C"


def test_most_retaining_option_wins_when_two_apply():
    both = compile_profile(
        DeidSettings(retain_patient_characteristics=True, clean_descriptors=True)
    )
    assert both.action_for(tag("Allergies")) == "C"
    assert both.action_for(tag("PatientSex")) == "K"


def test_presets_and_switches_refine_them():
    research = compile_profile(DeidSettings(profile="research"))
    assert research.options == {
        "retain_patient_characteristics",
        "retain_long_modified_dates",
        "retain_safe_private",
        "retain_device_identity",
    }
    assert research.dates_mode == "MODIFIED"
    refined = compile_profile(DeidSettings(profile="research", retain_device_identity=False))
    assert "retain_device_identity" not in refined.options
    assert compile_profile(DeidSettings()).dates_mode == "REMOVED"
    names_only = compile_profile(DeidSettings(profile="names-only"))
    assert names_only.keep_all_private
    assert names_only.dates_mode == "UNMODIFIED"
    assert names_only.action_for(tag("StudyInstanceUID")) == "K"
    assert names_only.action_for(tag("PatientAddress")) == "X"
    assert names_only.action_for(tag("OtherPatientNames")) == "X"
    assert names_only.action_for(tag("PatientBirthTime")) == "X"
    assert names_only.action_for(tag("StudyDescription")) == "K"
    names_only_uids = compile_profile(DeidSettings(profile="names-only", retain_uids=False))
    assert names_only_uids.action_for(tag("StudyInstanceUID")) == "U"
    assert names_only.method_codes() == []


def test_method_codes_follow_options():
    profile = compile_profile(DeidSettings(retain_uids=True, clean_graphics=True))
    assert profile.method_codes()[0][0] == "113100"
    assert {c for c, _ in profile.method_codes()} == {"113100", "113110", "113103"}


def test_profile_is_cached_immutable_and_describes_itself():
    settings = DeidSettings(rules=(SiteRule(tag="StudyDescription", action="keep"),))
    profile = compile_profile(settings)
    assert compile_profile(settings) is profile
    with pytest.raises(TypeError):
        profile.actions[0x00080020] = "K"  # type: ignore[index]
    lines = profile.describe()
    assert lines[0] == "preset: basic"
    assert any("(0008,1030): keep" in line for line in lines)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (SiteRule(tag="NoSuchKeyword", action="keep"), "(gggg,eeee)"),
        (SiteRule(tag="(0010,00ZZ)", action="keep"), "DICOM keyword"),
        (SiteRule(tag="PatientComments", action="replace"), "needs a 'value'"),
        (SiteRule(tag="PatientComments", action="force"), "needs a 'value'"),
        (SiteRule(tag="(0011,1001)", action="force", value="x"), "dictionary VR"),
        (SiteRule(tag="StudyDescription", action="regexp"), "needs a 'pattern'"),
        (SiteRule(tag="StudyDescription", action="regexp", pattern="(unclosed"), "regular"),
        (SiteRule(tag="Rows", action="force", value="many"), "not a number"),
    ],
)
def test_bad_site_rules_are_config_errors_saying_what_is_accepted(rule, fragment):
    with pytest.raises(ConfigError, match=r"rules\[0\]") as caught:
        compile_profile(DeidSettings(rules=(rule,)))
    assert fragment in caught.value.message


def test_bad_private_keep_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="0x00-0xFF"):
        compile_profile(DeidSettings(private_keep=(PrivateKeepRule("ACME", (0x100,)),)))
    with pytest.raises(ConfigError, match="odd group"):
        compile_profile(DeidSettings(private_keep=(PrivateKeepRule("ACME", (1,), 0x0010),)))
