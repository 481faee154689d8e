"""Generate the labelled patient-matching set (tests/data/name_pairs*.csv), deterministically.

Usage: python bench/make_name_pairs.py [--seed N] [--persons N] [--out FILE]

Why generated: a hand-written set is small and drifts towards the cases the matcher already
handles. This script draws registered people from 19 naming traditions and, for each, queries
of the kinds that go wrong in practice (typos in short and long words, queries without a birth
date near a registered name, twins, father and son with and without suffixes, names written in
one script only, Arabic transliterations, Japanese long vowels, particles, double surnames,
placeholders, demographics-file spellings, hospital IDs with a misspelt name). Each row is a
pair: the registered identity (A, keyed by ``a_key``) and a query (B), labelled with whether B
is the same person as A. The labels come from how a row was built, never from the matcher.

Two seeds are checked in: 12 (``name_pairs.csv``, the split the thresholds were tuned on) and
1212 (``name_pairs_holdout.csv``, never looked at while tuning). The same seed always gives the
same file, byte for byte (a test checks it).
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path

TUNING_SEED = 12
HOLDOUT_SEED = 1212
COLUMNS = [
    "pair", "tradition", "category", "same_person", "a_key",
    "name_a", "birth_a", "sex_a", "id_a", "issuer_a",
    "name_b", "birth_b", "sex_b", "id_b", "issuer_b",
]  # fmt: skip


@dataclass(frozen=True)
class Tradition:
    """Family names, given names by sex, and how the tradition's names vary in writing."""

    name: str
    family: tuple[str, ...]
    male: tuple[str, ...]
    female: tuple[str, ...]
    # (spelling, other spelling) pairs of one name written two ways (transliteration, accents).
    variants: tuple[tuple[str, str], ...] = ()


def _t(name: str, family: str, male: str, female: str, variants: str = "") -> Tradition:
    pairs = tuple(tuple(v.split("/")) for v in variants.split()) if variants else ()
    return Tradition(
        name,
        tuple(f.replace("_", " ") for f in family.split()),
        tuple(male.split()),
        tuple(female.split()),
        pairs,  # type: ignore[arg-type]
    )


TRADITIONS = [
    _t(
        "english",
        "Smith Johnson Taylor Miller King Bailey Walker Wright Harris Clarke Cooper Turner "
        "Hughes Morgan Price Bennett Fletcher Gardner Holloway Whitaker Pemberton Ashworth",
        "John James George Peter Mark Paul Neil Adam Ian Luke Oliver Thomas Edward Henry",
        "Mary Megan Anne Joan Ruth Emma Kate Jane Amy Lucy Deborah Christine Eleanor Sophie",
        "Clarke/Clark Philip/Phillip Ann/Anne",
    ),
    _t(
        "irish",
        "O'Connor O'Brien O'Neill MacCarthy McGrath Byrne Doyle Walsh Ryan Kavanagh "
        "O'Sullivan McNamara Fitzgerald Donnelly",
        "Niall Sean Liam Conor Eoin Ciaran Padraig Declan Ronan Cathal",
        "Aoife Siobhan Niamh Orla Maeve Roisin Sinead Grainne Ciara Brid",
        "Sean/Seán O'Connor/OConnor McGrath/MacGrath",
    ),
    _t(
        "german",
        "Müller Schröder Weiß Groß Becker Köhler Krüger Hoffmann Schäfer Böhm Jäger Fuchs "
        "Günther Vogel Braun Lößner Scholz Möller",
        "Hans Jörg Jürgen Klaus Uwe Dieter Günter Stefan Lutz Horst Malte Sören",
        "Jutta Ute Käthe Heike Anke Birgit Dörte Silke Gudrun Britta Märta Ilse",
        "Müller/Mueller Schröder/Schroeder Weiß/Weiss Groß/Gross Köhler/Koehler Krüger/Krueger "
        "Jörg/Joerg Jürgen/Juergen Günter/Guenter Käthe/Kaethe",
    ),
    _t(
        "french",
        "Lefèvre Dupré Bérard Ménard Leroy Moreau Faure Girard Rousseau Lambert Gauthier "
        "Benoît Chevalier Mercier",
        "Jérôme René André Noël Hervé Léon Marc Luc Yves Rémi Gaël Théo",
        "Hélène Zoé Chloé Inès Léa Anaïs Céline Agnès Noémie Maëlle Élodie Amélie",
        "Lefèvre/Lefevre Jérôme/Jerome Hélène/Helene Benoît/Benoit René/Rene",
    ),
    _t(
        "spanish",
        "García López Martínez Sánchez Pérez Gómez Fernández Ruiz Díaz Moreno Muñoz Álvarez "
        "Romero Navarro",
        "José Juan Luis Jesús Ángel Raúl Iván Óscar Pablo Diego Andrés Tomás",
        "María Ana Lucía Sofía Inés Rocío Pilar Belén Elena Nuria Marta Raquel",
        "José/Jose María/Maria Muñoz/Munoz Ángel/Angel",
    ),
    _t(
        "portuguese",
        "Silva Santos Ferreira Pereira Oliveira Costa Rodrigues Sousa Gonçalves Lopes Marques "
        "Carvalho Azevedo Ribeiro",
        "João Tiago Rui Nuno Hugo Vasco Luís Bruno Pedro Filipe Sérgio Duarte",
        "Joana Inês Rita Vera Sara Catarina Leonor Beatriz Mafalda Teresa Luísa Raquel",
        "João/Joao Gonçalves/Goncalves Sousa/Souza Luís/Luis",
    ),
    _t(
        "italian",
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo "
        "Conti Mancini",
        "Luca Marco Paolo Enzo Dario Nicolò Matteo Fabio Piero Gino Carlo Ugo",
        "Giulia Chiara Sara Anna Marta Elisa Ilaria Noemi Rosa Lia Gioia Irene",
        "Nicolò/Nicolo",
    ),
    _t(
        "dutch",
        "de_Vries van_Dijk Bakker Visser Smit de_Boer Mulder de_Groot Bos Vos Peters Hendriks "
        "van_der_Berg van_Leeuwen",
        "Jan Piet Kees Joost Bram Sem Daan Thijs Ruud Wim Gijs Joris",
        "Anouk Femke Sanne Lotte Noor Eva Fleur Roos Ilse Marijke Tess Lieke",
        "",
    ),
    _t(
        "nordic",
        "Ångström Sørensen Hansen Jensen Nielsen Lindqvist Bergström Åberg Håkansson Østergaard "
        "Solberg Dahl Lund Holm",
        "Lars Nils Erik Sven Olav Anders Bjørn Jens Åke Leif Stig Rune",
        "Ingrid Astrid Sigrid Karin Elin Maja Åsa Liv Siri Kaja Tove Ulla",
        "Ångström/Aangstroem Sørensen/Soerensen Åberg/Aaberg Håkansson/Haakansson "
        "Østergaard/Oestergaard Bjørn/Bjoern Åke/Aake Åsa/Aasa",
    ),
    _t(
        "polish",
        "Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański "
        "Woźniak Dąbrowski Kozłowski Jankowski Mazur",
        "Piotr Jan Łukasz Paweł Adam Marek Tomasz Jakub Michał Wojciech Kamil Bartosz",
        "Anna Ewa Zofia Kasia Agata Iwona Beata Dorota Jolanta Marta Ola Ula",
        "Łukasz/Lukasz Paweł/Pawel Michał/Michal Wiśniewski/Wisniewski Wójcik/Wojcik",
    ),
    _t(
        "greek",
        "Papadopoulos Georgiou Nikolaou Pappas Dimitriou Konstantinou Ioannou Vlachos Karagiannis "
        "Alexiou Christodoulou Economou",
        "Dimitrios Georgios Nikos Yannis Kostas Stavros Petros Spyros Thanos Vasilis Manos Takis",
        "Eleni Maria Sofia Katerina Despina Ioanna Georgia Vasiliki Anastasia Dimitra Irini Zoi",
        "Papadopoulos/Παπαδόπουλος Georgiou/Γεωργίου Dimitrios/Δημήτριος Eleni/Ελένη",
    ),
    _t(
        "russian",
        "Ivanov Petrov Smirnov Kuznetsov Popov Sokolov Lebedev Kozlov Novikov Morozov Volkov Orlov",
        "Sergey Alexey Dmitry Ivan Oleg Pavel Yuri Igor Boris Maxim Roman Denis",
        "Olga Irina Natalia Elena Anna Tatiana Svetlana Yulia Marina Daria Polina Vera",
        "Ivanov/Иванов Petrov/Петров Smirnov/Смирнов Sergey/Sergei Alexey/Aleksei "
        "Dmitry/Dmitri Natalia/Natalya Yulia/Julia Tatiana/Tatyana",
    ),
    _t(
        "arabic",
        "Haddad Khalil Nasser Saleh Hamdan Farouk Mansour Karim Yousef Rahman Bakr Aziz Qasim "
        "Abdullah",
        "Mohammed Ahmed Omar Youssef Khaled Hassan Hussein Ibrahim Mustafa Tariq Karim Walid",
        "Fatima Aisha Mariam Layla Noor Huda Samira Rania Salma Yasmin Zainab Amal",
        "Mohammed/Muhammad Mohammed/Mohamed Ahmed/Ahmad Youssef/Yusuf Hussein/Husain "
        "Mustafa/Mostafa Aisha/Aicha Fatima/Fatma Yousef/Yusuf Abdullah/Abdallah",
    ),
    _t(
        "japanese",
        "Satou Itou Katou Saitou Kondou Endou Gotou Oono Yamamoto Tanaka Suzuki Nakamura "
        "Kobayashi Shimizu",
        "Tarou Kouji Yuuto Shouta Ryouta Daisuke Hiroshi Kenji Takeshi Makoto Shuuhei Kouhei",
        "Yuuko Youko Kyouko Mayumi Akiko Haruka Emi Naomi Sakura Yumi Reiko Shouko",
        "Satou/Sato Itou/Ito Katou/Kato Saitou/Saito Kondou/Kondo Endou/Endo Gotou/Goto "
        "Oono/Ono Tarou/Taro Kouji/Koji Yuuto/Yuto Shouta/Shota Ryouta/Ryota Yuuko/Yuko "
        "Youko/Yoko Kyouko/Kyoko Shouko/Shoko Shuuhei/Shuhei Kouhei/Kohei Tarou/Tarō "
        "Kouji/Kōji Satou/Satō",
    ),
    _t(
        "chinese",
        "Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu",
        "Wei Jun Hao Lei Qiang Bo Tao Jian Ming Chao Yong Gang",
        "Fang Jing Li Min Yan Xiu Hui Ying Lan Mei Xia Juan",
        "",
    ),
    _t(
        "korean",
        "Kim Lee Park Choi Jung Kang Cho Yoon Jang Lim Han Shin",
        "Minjun Seojun Dohyun Jiho Junwoo Hyunwoo Sungmin Jaehyun Taeyang Donghyun",
        "Seoyeon Jiwoo Haeun Minseo Jiyoon Soyeon Yuna Eunji Hyejin Sumin",
        "Lee/Yi Park/Pak Choi/Choe Jung/Chung",
    ),
    _t(
        "indian",
        "Sharma Patel Gupta Singh Kumar Reddy Iyer Nair Chatterjee Banerjee Mukherjee Rao "
        "Krishnan Menon",
        "Rahul Amit Arjun Vikram Sanjay Rajesh Anil Suresh Ravi Karthik Arun Deepak",
        "Priya Anjali Sunita Kavya Neha Pooja Lakshmi Divya Meera Asha Radha Shreya",
        "Chatterjee/Chatterji Banerjee/Banerji Mukherjee/Mukherji",
    ),
    _t(
        "turkish",
        "Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan "
        "Kılıç Aslan",
        "Mehmet Mustafa Ahmet Ali Hüseyin Hasan İbrahim Murat Ömer Emre Burak Oğuz",
        "Ayşe Fatma Emine Hatice Zeynep Elif Özlem Gül Büşra Şule Derya Ebru",
        "Yılmaz/Yilmaz Şahin/Sahin Çelik/Celik Öztürk/Ozturk Ayşe/Ayse Hüseyin/Huseyin",
    ),
    _t(
        "yoruba",
        "Adeyemi Oyelaran Adebayo Ogunleye Olawale Afolabi Akinola Babatunde Okonkwo Balogun "
        "Ogundipe Adeleke",
        "Babatunde Oluwaseun Adewale Ayodele Olumide Femi Kunle Tunde Segun Dapo Yemi Wale",
        "Folake Adunni Bisola Funmilayo Omolara Yetunde Titilayo Kemi Ronke Bukola Sade Toyin",
        "",
    ),
]

# Names written in Chinese/Japanese/Korean characters for the one-script cases.
CJK_GROUPS = {
    ("chinese", "Wang", "Wei"): "王^伟", ("chinese", "Li", "Jun"): "李^军",
    ("chinese", "Zhang", "Hao"): "张^浩", ("chinese", "Liu", "Fang"): "刘^芳",
    ("chinese", "Chen", "Jing"): "陈^静", ("chinese", "Yang", "Min"): "杨^敏",
    ("chinese", "Huang", "Yan"): "黄^燕", ("chinese", "Zhao", "Lei"): "赵^磊",
    ("japanese", "Yamamoto", "Hiroshi"): "山本^博", ("japanese", "Tanaka", "Kenji"): "田中^健二",
    ("japanese", "Suzuki", "Akiko"): "鈴木^明子", ("japanese", "Nakamura", "Emi"): "中村^恵美",
    ("korean", "Kim", "Minjun"): "김^민준", ("korean", "Park", "Seoyeon"): "박^서연",
    ("korean", "Lee", "Jiwoo"): "이^지우", ("korean", "Choi", "Dohyun"): "최^도현",
}  # fmt: skip
PLACEHOLDERS = [
    "ANONYMOUS",
    "Anonymized",
    "UNKNOWN^PATIENT",
    "ANONYMOUS^PATIENT",
    "NONE",
    "Removed",
]


@dataclass(frozen=True)
class Person:
    """A registered person (A side)."""

    key: str
    tradition: Tradition
    family: str
    given: str
    middle: str
    sex: str
    birth: str
    patient_id: str
    issuer: str
    suffix: str = ""
    ideographic: str = ""

    def pn(self) -> str:
        """The DICOM PN value the person is registered with."""
        parts = [self.family, self.given, self.middle, "", self.suffix]
        while parts and not parts[-1]:
            parts.pop()
        alphabetic = "^".join(parts)
        return f"{alphabetic}={self.ideographic}" if self.ideographic else alphabetic


class Generator:
    """Builds people and queries from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.rows: list[dict[str, str]] = []
        self.used_names: set[frozenset[str]] = set()
        self.used_births: set[str] = set()
        self.counter = 0

    # --- helpers ------------------------------------------------------------------------------

    def claim(self, *words: str) -> bool:
        """Reserve a name (its words, folded, in any order); False if somebody has it already.

        Registered people never share a name, so a query without birth date has one answer.
        """
        key = frozenset(_strip_accents(" ".join(words)).lower().replace("'", "").split())
        if key in self.used_names:
            return False
        self.used_names.add(key)
        return True

    def birth(self) -> str:
        while True:
            year = self.rng.randint(1925, 2022)
            value = f"{year}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}"
            if value not in self.used_births:
                self.used_births.add(value)
                return value

    def person(self, tradition: Tradition, *, with_id: bool | None = None) -> Person:
        while True:
            sex = self.rng.choice("MF")
            given = self.rng.choice(tradition.male if sex == "M" else tradition.female)
            family = self.rng.choice(tradition.family)
            if self.claim(family, given):
                break
        middle = ""
        if (
            tradition.name in ("english", "german", "portuguese", "spanish")
            and self.rng.random() < 0.3
        ):
            pool = tradition.male if sex == "M" else tradition.female
            middle = self.rng.choice([g for g in pool if g != given])
        if tradition.name in ("spanish", "portuguese") and self.rng.random() < 0.5:
            second = self.rng.choice([f for f in tradition.family if f != family])
            family = f"{family} {second}"
        self.counter += 1
        has_id = with_id if with_id is not None else self.rng.random() < 0.5
        ideographic = CJK_GROUPS.get((tradition.name, family, given), "")
        return Person(
            key=f"s{self.seed}p{self.counter}",
            tradition=tradition,
            family=family,
            given=given,
            middle=middle,
            sex=sex,
            birth=self.birth(),
            patient_id=f"H{self.rng.randint(10**6, 10**7 - 1)}" if has_id else "",
            issuer="HOSP-A" if has_id else "",
            ideographic=ideographic,
        )

    def add(
        self,
        a: Person,
        category: str,
        same: bool,
        name: str,
        *,
        birth: str | None = None,
        sex: str | None = None,
        patient_id: str = "",
        issuer: str = "",
    ) -> None:
        self.rows.append(
            {
                "pair": str(len(self.rows) + 1),
                "tradition": a.tradition.name,
                "category": category,
                "same_person": "1" if same else "0",
                "a_key": a.key,
                "name_a": a.pn(),
                "birth_a": a.birth,
                "sex_a": a.sex,
                "id_a": a.patient_id,
                "issuer_a": a.issuer,
                "name_b": name,
                "birth_b": a.birth if birth is None else birth,
                "sex_b": a.sex if sex is None else sex,
                "id_b": patient_id,
                "issuer_b": issuer,
            }
        )

    def typo(self, word: str) -> str:
        """One edit (substitution, deletion, insertion or transposition) inside ``word``.

        Never one that makes a spelling the German or Dutch conventions read as another letter
        (``ae`` for ``ä``, ``ij`` for ``y``): that would be the same name, not a typo.
        """
        for _ in range(50):
            typo = self._edit(word)
            if not _CONVENTIONS.search(typo.lower()) or _CONVENTIONS.search(word.lower()):
                return typo
        return typo

    def _edit(self, word: str) -> str:
        letters = "abcdefghiklmnoprstuvwy"
        if len(word) < 3:
            return word + self.rng.choice("aeiou")
        i = self.rng.randint(1, len(word) - 2)
        kind = self.rng.choice(["sub", "del", "ins", "swap"])
        if kind == "sub":
            new = self.rng.choice([c for c in letters if c != word[i].lower()])
            return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]
        if kind == "del":
            return word[:i] + word[i + 1 :]
        if kind == "ins":
            return word[:i] + self.rng.choice(letters) + word[i:]
        if word[i] == word[i + 1]:
            return word[:i] + word[i + 1 :]
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    def variant(self, a: Person) -> str | None:
        """``a``'s name with one word written in another accepted spelling, if there is one."""
        words = {a.family: "family", a.given: "given"}
        options = [(x, y) for x, y in a.tradition.variants for w in words if x in w.split()]
        options += [(y, x) for x, y in a.tradition.variants for w in words if y in w.split()]
        if not options:
            return None
        old, new = self.rng.choice(options)
        family = " ".join(new if w == old else w for w in a.family.split())
        given = " ".join(new if w == old else w for w in a.given.split())
        return (
            "^".join(p for p in (family, given, a.middle) if p) if a.middle else f"{family}^{given}"
        )

    # --- the population and its queries -------------------------------------------------------

    def build(self, persons_per_tradition: int) -> list[dict[str, str]]:
        people: list[Person] = []
        for tradition in TRADITIONS:
            for _ in range(persons_per_tradition):
                people.append(self.person(tradition))
        # Make sure every one-script name of the table is registered (with a hospital ID).
        for (tradition_name, family, given), _group in CJK_GROUPS.items():
            tradition = next(t for t in TRADITIONS if t.name == tradition_name)
            if not self.claim(family, given):
                continue
            self.counter += 1
            people.append(
                Person(
                    f"s{self.seed}p{self.counter}", tradition, family, given, "",
                    self.rng.choice("MF"), self.birth(),
                    f"H{self.rng.randint(10**6, 10**7 - 1)}", "HOSP-A",
                    ideographic=CJK_GROUPS[(tradition_name, family, given)],
                )
            )  # fmt: skip
        for a in people:
            self.queries(a)
        self.twins_and_families()
        return self.rows

    def plain(self, a: Person) -> str:
        return "^".join(p for p in (a.family, a.given, a.middle) if p)

    def queries(self, a: Person) -> None:
        rng = self.rng
        alphabetic = self.plain(a)
        # The same name as registered, written otherwise (case, order, free text).
        style = rng.choice(["upper", "free", "comma", "same"])
        if style == "upper":
            self.add(a, "exact_case", True, alphabetic.upper())
        elif style == "free":
            words = " ".join(p for p in (a.given, a.middle, a.family) if p)
            self.add(a, "exact_free_text", True, words, birth="")
        elif style == "comma":
            self.add(a, "demographics_spelling", True, f"{a.family}, {a.given}")
        else:
            self.add(a, "exact_no_birth_date", True, alphabetic, birth="", sex="")
        # One typo in one word, with the birth date.
        words = [a.family, a.given]
        target = rng.choice(words)
        short = [w for w in words if 3 <= len(w) <= 6]
        if short and rng.random() < 0.5:
            target = rng.choice(short)
            category = "typo_short_word"
        else:
            category = "typo_long_word" if len(target) > 6 else "typo_short_word"
        typo = self.typo(target)
        family = typo if target == a.family else a.family
        given = typo if target == a.given else a.given
        if typo.lower() != target.lower():
            self.add(
                a, category, True, f"{family}^{given}", sex="" if rng.random() < 0.1 else a.sex
            )
            # The same misspelt name without a birth date is somebody we cannot tell apart.
            if rng.random() < 0.35:
                self.add(a, "fuzzy_no_birth_date", False, f"{family}^{given}", birth="", sex="")
        # Another accepted spelling of one word (transliteration, accents, long vowels).
        variant = self.variant(a)
        if variant is not None:
            self.add(a, "spelling_variant", True, variant)
        # Accents dropped, upper case (what old systems send).
        folded = _strip_accents(alphabetic).upper()
        if folded != alphabetic.upper():
            self.add(a, "accents_dropped", True, folded)
        # Middle name missing, or given as an initial.
        if a.middle:
            if rng.random() < 0.5:
                self.add(a, "middle_missing", True, f"{a.family}^{a.given}")
            else:
                self.add(a, "middle_initial", True, f"{a.family}^{a.given}^{a.middle[0]}")
        # Double surnames written with a hyphen or the first one alone.
        if " " in a.family and a.tradition.name in ("spanish", "portuguese"):
            if rng.random() < 0.5:
                self.add(
                    a, "double_surname_hyphen", True, f"{a.family.replace(' ', '-')}^{a.given}"
                )
            else:
                self.add(a, "double_surname_first_only", True, f"{a.family.split()[0]}^{a.given}")
        # Particles joined or split.
        if " " in a.family and a.tradition.name == "dutch":
            self.add(a, "particles", True, f"{a.family.replace(' ', '')}^{a.given}")
        if "'" in a.family:
            self.add(a, "particles", True, f"{a.family.replace(chr(39), ' ')}^{a.given}")
        # The hospital ID with a misspelt name (the name is not what identifies here).
        if a.patient_id:
            misspelt = f"{self.typo(a.family)}^{self.typo(a.given)}"
            self.add(
                a, "id_confirms_misspelt_name", True, misspelt,
                patient_id=a.patient_id, issuer=a.issuer,
            )  # fmt: skip
        # The ideographic group alone, with the hospital ID, birth date and sex.
        if a.ideographic and a.patient_id:
            self.add(
                a, "one_script_with_id", True, f"={a.ideographic}",
                patient_id=a.patient_id, issuer=a.issuer,
            )  # fmt: skip
        # Somebody else: same name, another birth date; same birth date, another given name.
        self.add(a, "other_birth_date", False, alphabetic, birth=self.birth())
        pool = a.tradition.male if a.sex == "M" else a.tradition.female
        others = [
            g
            for g in pool
            if all(_distance(g.lower(), w.lower()) > 2 for w in (a.given, a.middle or "-"))
        ]
        if others:
            self.add(a, "other_given_name", False, f"{a.family}^{rng.choice(others)}")
        if rng.random() < 0.25:
            self.add(a, "other_sex", False, alphabetic, sex="F" if a.sex == "M" else "M")
        # A placeholder with this person's birth date and sex: nobody in particular.
        if rng.random() < 0.15:
            self.add(a, "placeholder", False, rng.choice(PLACEHOLDERS))
        # A name that differs from the registered one in one letter, without birth date (another
        # person, as far as anybody can tell).
        if rng.random() < 0.2:
            near = f"{a.family}{rng.choice('iy')}^{a.given}"
            self.add(a, "near_name_no_birth_date", False, near, birth="", sex="")

    def twins_and_families(self) -> None:
        """Twins (both registered) and fathers and sons (one or both registered)."""
        for index in range(len(TRADITIONS) * 2):
            tradition = TRADITIONS[index % len(TRADITIONS)]
            first = self.person(tradition, with_id=False)
            pool = tradition.male if first.sex == "M" else tradition.female
            free = [g for g in pool if g != first.given and self.claim(first.family, g)]
            if not free:
                continue
            given = free[0]
            self.counter += 1
            second = replace(first, key=f"s{self.seed}p{self.counter}", given=given, middle="")
            first = replace(first, middle="")
            # Each twin found by the exact name, and by a typo in the family name: that typo is as
            # near to the other twin, so it goes to review (counted as missed, never as wrong).
            self.add(first, "twin_exact", True, first.pn())
            self.add(second, "twin_exact", True, second.pn().upper())
            # A surname alone names a family, not a person: not linkable to either twin.
            self.add(first, "surname_only", False, f"{first.family}^")
            self.add(second, "twin_given_typo", True, f"{second.family}^{self.typo(second.given)}")
        for index in range(len(TRADITIONS)):
            tradition = TRADITIONS[index % len(TRADITIONS)]
            father = self.person(tradition, with_id=False)
            while father.sex != "M":
                father = self.person(tradition, with_id=False)
            son_birth = str(int(father.birth[:4]) + 28) + father.birth[4:]
            father_sr = replace(father, suffix="Sr", middle="")
            self.add(father_sr, "father_son_suffix", False, f"{father.family}^{father.given}^^^Jr",
                     birth="", sex="M")  # fmt: skip
            self.add(father_sr, "father_son_suffix", False, f"{father.family}^{father.given}^^^Jr",
                     birth=son_birth, sex="M")  # fmt: skip
            self.add(father_sr, "suffix_agrees", True, f"{father.family}^{father.given}^^^SR")
            plain_father = replace(father, key=father.key + "n", middle="", birth=self.birth())
            self.add(plain_father, "father_son_no_suffix", False,
                     f"{father.family}^{father.given}", birth=son_birth)  # fmt: skip


_CONVENTIONS = __import__("re").compile("[aouäöü]e|ij")


def _strip_accents(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def generate(seed: int, persons_per_tradition: int = 22) -> str:
    """The CSV text of the labelled set for ``seed``."""
    rows = Generator(seed).build(persons_per_tradition)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=TUNING_SEED)
    parser.add_argument("--persons", type=int, default=22, help="people per tradition")
    parser.add_argument("--out", type=Path, default=None, help="default: stdout")
    args = parser.parse_args(argv)
    text = generate(args.seed, args.persons)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
