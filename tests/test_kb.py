"""The knowledge base as shipped is sound, and `kb check` catches what a supervisor may break."""

import shutil
import subprocess
import sys

import pytest

from callbot.errors import KbError
from callbot.kb import MIN_OUT_OF_SCOPE, MIN_PHRASINGS, check_kb, load_kb


def test_shipped_kb_is_sound(kb):
    issues = check_kb(kb)
    assert [str(i) for i in issues if i.level == "error"] == []
    assert set(kb.intents) == set(kb.taxonomy_ids) and len(kb.intents) == 39
    for iid in kb.taxonomy_ids:
        assert len(kb.phrasings_of(iid)) >= MIN_PHRASINGS
    assert len(kb.phrasings_of("hors_sujet")) >= MIN_OUT_OF_SCOPE


def test_taxonomy_is_the_contract(kb):
    """The project's copy of the taxonomy carries the same ids and facts as the contract."""
    for t in kb.taxonomy:
        intent = kb.intents[t["id"]]
        assert intent.resolution == t["resolution"]
        assert len(intent.facts) == len(t["facts"])


@pytest.fixture
def kb_copy(tmp_path, config):
    dst = tmp_path / "kb"
    shutil.copytree(config.paths.kb, dst)
    return dst


def run_check(kb_dir):
    env = {"CALLBOT_PATHS_KB": str(kb_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "callbot", "kb", "check"], env=env,
                          capture_output=True, text=True)


def test_malformed_intent_file_names_file_and_line(kb_copy):
    p = kb_copy / "intents" / "obtenir_siren.toml"
    lines = p.read_text().splitlines()
    lines[2] = 'resolution = "bot'          # unterminated string on line 3
    p.write_text("\n".join(lines))
    with pytest.raises(KbError, match=r"obtenir_siren.toml:3"):
        load_kb(kb_copy)
    r = run_check(kb_copy)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "obtenir_siren.toml:3" in r.stderr


def test_check_finds_what_is_wrong(kb_copy):
    # a duplicate phrasing across intents
    (kb_copy / "phrasings" / "obtenir_kbis.txt").open("a").write(
        "\ncomment je trouve mon code ape\n")
    (kb_copy / "phrasings" / "connaitre_code_ape.txt").open("a").write(
        "\ncomment je trouve mon code ape\n")
    # an unknown intent
    text = (kb_copy / "intents" / "oui.toml").read_text()
    (kb_copy / "intents" / "peut_etre.toml").write_text(
        text.replace('id = "oui"', 'id = "peut_etre"').replace('role = "yes"', ""))
    # a missing intent
    (kb_copy / "intents" / "reclamation.toml").unlink()
    # an answer that drops a fact, and one far too long
    p = kb_copy / "intents" / "obtenir_siren.toml"
    text = p.read_text()
    assert " L'attribution du numéro est gratuite." in text
    p.write_text(text.replace(" L'attribution du numéro est gratuite.", ""))
    p = kb_copy / "intents" / "guichet_unique.toml"
    text = p.read_text()
    p.write_text(text.replace('answer = """', 'answer = """' + "Bla bla bla. " * 40, 1))
    r = run_check(kb_copy)
    out = r.stdout
    assert r.returncode == 1
    assert "same phrasing as" in out
    assert "unknown intent id 'peut_etre'" in out
    assert "missing intent file for 'reclamation'" in out
    assert "missing fact" in out and "obtenir_siren" in out
    assert "too long when spoken" in out and "guichet_unique" in out


def test_taxonomy_is_json_checked(kb_copy):
    (kb_copy / "taxonomy.json").write_text("[{\"id\": \"x\",}")
    with pytest.raises(KbError, match="taxonomy.json:1"):
        load_kb(kb_copy)


def test_the_intents_the_dialogue_acts_on_are_named_by_role(kb_copy):
    roles = load_kb(kb_copy).roles
    assert (roles.advisor, roles.yes, roles.goodbye) == ("parler_conseiller", "oui", "au_revoir")
    assert roles.closings == ("remerciement", "au_revoir", "non")
    advisor = kb_copy / "intents" / "parler_conseiller.toml"
    text = advisor.read_text()
    # a role nobody plays: refused, with what to add
    advisor.write_text(text.replace('role = "advisor"', "#"))
    with pytest.raises(KbError, match="no intent has role 'advisor'.*role = \"advisor\""):
        load_kb(kb_copy)
    # two intents for one role, or a role that does not exist: refused, naming the file
    advisor.write_text(text.replace('role = "advisor"', 'role = "yes"'))
    with pytest.raises(KbError, match="role 'yes' is already played"):
        load_kb(kb_copy)
    advisor.write_text(text.replace('role = "advisor"', 'role = "boss"'))
    with pytest.raises(KbError, match=r"parler_conseiller.toml: role 'boss' is not one of"):
        load_kb(kb_copy)
