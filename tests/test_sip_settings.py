"""The [sip], [transfer] and [workers] sections: defaults, checks that name the key, masking."""

from __future__ import annotations

import pytest

from callbot.errors import ConfigError
from telephony.settings import auto_workers, load_settings
from telephony.transfer import ascii_safe, context_headers, refer_target
from callbot.events import Transfer, TransferContext


def settings_from_text(tmp_path, text: str, env: dict | None = None):
    path = tmp_path / "callbot.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env=env or {})


def test_defaults_are_valid():
    s = load_settings(env={})
    assert s.sip.bind == "127.0.0.1" and s.sip.port == 5060
    assert s.sip.transports == ("udp", "tcp")
    assert s.sip.max_calls == 4
    assert s.sip.codecs[:2] == ("PCMA", "PCMU")
    assert s.transfer.on_failure == "fallback"
    assert "9 heures" in s.transfer.fallback_text
    assert s.sip.allows("127.0.0.1") and not s.sip.allows("127.0.0.2")
    assert s.core.asr.language == "fr"          # the core sections load as usual


def test_file_and_environment_override(tmp_path):
    s = settings_from_text(tmp_path, """
[sip]
port = 5080
allowed_sources = ["10.1.0.0/16", "192.0.2.7"]
[transfer]
on_failure = "bridge"
[asr]
threads = 1
""", env={"CALLBOT_SIP_TRANSPORTS": "udp", "CALLBOT_WORKERS_COUNT": "3"})
    assert s.sip.port == 5080
    assert s.sip.transports == ("udp",)
    assert s.workers.count == 3
    assert s.sip.allows("10.1.200.3") and s.sip.allows("192.0.2.7")
    assert not s.sip.allows("10.2.0.1") and not s.sip.allows("not-an-ip")
    assert s.transfer.on_failure == "bridge"
    assert s.core.asr.threads == 1


@pytest.mark.parametrize("text, key", [
    ("[sip]\nprot = 5060\n", "sip.prot"),
    ("[sip]\nport = 70000\n", "sip.port"),
    ("[sip]\nport = \"x\"\n", "sip.port"),
    ("[sip]\nmax_calls = 8\n", "sip.max_calls"),
    ("[sip]\ntransports = [\"tls\"]\n", "sip.transports"),
    ("[sip]\nallowed_sources = [\"10.0.0.0/33\"]\n", "sip.allowed_sources"),
    ("[sip]\ncodecs = [\"opus\"]\n", "sip.codecs"),
    ("[sip]\nbind = \"localhost\"\n", "sip.bind"),
    ("[sip]\nrtp_port_range = 6\n", "sip.rtp_port_range"),
    ("[sip]\nport = 40010\n", "sip.port"),                       # inside the RTP range
    ("[sip]\nport = 40500\n[workers]\ncount = 4\n", "workers' RTP"),   # a worker's range
    ("[workers]\ncount = 2\nbase_sip_port = 40100\n", "workers.base_sip_port"),
    ("[transfer]\non_failure = \"retry\"\n", "transfer.on_failure"),
    ("[transfer]\nqueue_uri = \"conseillers\"\n", "transfer.queue_uri"),
    ("[transfer]\nrefer_timeout_s = 0\n", "transfer.refer_timeout_s"),
    ("[workers]\ncount = 0\n", "workers.count"),
    ("[workers]\ncount = \"many\"\n", "workers.count"),
    ("[workers]\ncount = 257\n", "workers.count"),
    ("[[sip.accounts]]\nregistrar = \"sip:pbx.example\"\nuser = \"bot\"\n",
     "sip.accounts[0].password"),
    ("[[sip.accounts]]\nregistrar = \"sip:pbx\"\nuser = \"b\"\npassword = \"p\"\nexpires = 1\n",
     "sip.accounts[0].expires"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        settings_from_text(tmp_path, text)
    assert key in str(err.value)


def test_auto_worker_count_follows_cores_and_memory(tmp_path):
    # one worker per core, as many as memory holds (700 MB each, 1 GB kept)
    assert auto_workers(cores=2, available_mb=24_000) == 2
    assert auto_workers(cores=16, available_mb=3_200) == 3
    assert auto_workers(cores=4, available_mb=900) == 1      # never none
    s = settings_from_text(tmp_path, "[workers]\ncount = \"auto\"\n")
    assert s.workers.count == auto_workers() >= 1
    assert load_settings(env={}).workers.count == auto_workers()       # the default
    assert load_settings(env={"CALLBOT_WORKERS_COUNT": "auto"}).workers.count == auto_workers()


def test_unknown_environment_key_is_refused():
    with pytest.raises(ConfigError, match="CALLBOT_SIP_PROT"):
        load_settings(env={"CALLBOT_SIP_PROT": "5060"})


def test_password_is_never_printed(tmp_path):
    s = settings_from_text(tmp_path, """
[[sip.accounts]]
registrar = "sip:pbx.example.org:5060"
user = "callbot"
password = "s3cret-Value"
""")
    acc = s.sip.accounts[0]
    assert acc.domain == "pbx.example.org" and acc.id_uri == "sip:callbot@pbx.example.org"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.to_dict())
    assert s.to_dict()["sip"]["accounts"][0]["password"] == "***"


def test_context_headers_are_ascii_and_escaped_in_refer_to():
    ctx = TransferContext(reason="personal_case", intent="siren_non_recu",
                          intents=("siren_non_recu",), siren="732829320",
                          summary="Cas personnel : SIREN non reçu ; dernière phrase : "
                                  "« je n'ai rien reçu »\r\nInjected: yes",
                          last_utterance="je n'ai rien reçu")
    headers = dict(context_headers(Transfer("personal_case", ctx), "abc@host"))
    summary = headers["X-Callbot-Summary"]
    assert summary.isascii() and "\r" not in summary and "\n" not in summary
    assert 'SIREN non recu ; derniere phrase : "je n\'ai rien recu" Injected: yes' in summary
    assert headers["X-Callbot-Siren"] == "732829320"
    target = refer_target("sip:conseillers@10.0.0.1:5090", list(headers.items()))
    assert target.startswith("<sip:conseillers@10.0.0.1:5090?X-Callbot-Reason=personal_case&")
    assert " " not in target and "%3B" in target and target.endswith(">")
    assert len(ascii_safe("é" * 1000)) <= 300


def test_core_and_telephony_sections_follow_the_same_rules(tmp_path):
    """One loader reads every section: same coercion, same bounds wording, same handling of
    blanks and lists, same refusal of tables from the environment."""
    s = settings_from_text(tmp_path, '[sip]\nuser = " callbot "\n[asr]\nlanguage = " fr "\n'
                           '[transfer]\non_failure = "bridge "\n',
                           env={"CALLBOT_SIP_CODECS": "PCMA, G722",
                                "CALLBOT_WORKERS_MEDIA_PRIORITY": "normal"})
    assert (s.sip.user, s.core.asr.language, s.transfer.on_failure) == ("callbot", "fr",
                                                                          "bridge")
    assert s.sip.codecs == ("PCMA", "G722") and s.workers.media_priority == "normal"
    for env, words in [({"CALLBOT_SIP_MAX_CALLS": "0"}, "sip.max_calls = 0 must be between"),
                       ({"CALLBOT_DIALOGUE_SIREN_ATTEMPTS": "0"},
                        "dialogue.siren_attempts = 0 must be greater than 0"),
                       ({"CALLBOT_SIP_LOG_LEVEL": "2.5"}, "sip.log_level must be a whole"),
                       ({"CALLBOT_ASR_BEAM_SIZE": "2.5"}, "asr.beam_size must be a whole"),
                       ({"CALLBOT_SIP_ACCOUNTS": "x"}, "CALLBOT_SIP_ACCOUNTS names no key"),
                       ({"CALLBOT_CONSOLE_USERS": "x"}, "CALLBOT_CONSOLE_USERS names no key")]:
        with pytest.raises(ConfigError, match=words):
            load_settings(env=env)


def test_several_hosts_settings_are_checked(tmp_path):
    """A front host lists other hosts' workers; a worker host has no front. What cannot
    work is refused at start, naming the keys."""
    from telephony.front import plan_for

    def settings(text: str):
        path = tmp_path / "c.toml"
        path.write_text(text)
        return load_settings(str(path), env={})

    secret = 'front_secret = "same-secret-on-every-host"'
    front = settings(f'[sip]\nbind = "10.0.0.10"\n[workers]\ncount = 0\n{secret}\n'
                     f'remote = ["10.0.0.11:5070", "10.0.0.12:5071"]\n')
    plan = plan_for(front, "s")
    assert plan.workers == ("sip:10.0.0.11:5070", "sip:10.0.0.12:5071")
    assert plan.setups_per_s == 2 * front.sip.max_setups_per_s
    host = settings(f'[sip]\nbind = "10.0.0.11"\n[workers]\ncount = 1\nfront = "none"\n'
                    f'bind = "10.0.0.11"\n{secret}\n')
    assert host.workers.front == "none" and host.workers.remote == ()
    refused = {
        "count = 0\n": "workers.count = 0 runs a front only",
        'count = 1\nfront = "none"\nbind = "10.0.0.11"\n': "same workers.front_secret",
        f'count = 1\nfront = "none"\n{secret}\n': "on the same address",
        f'count = 0\nremote = ["10.0.0.11:5070"]\n{secret}\n': "needs sip.bind",
        'remote = ["nowhere:5070"]\n': "is not ADDRESS:PORT",
    }
    for workers, message in refused.items():
        with pytest.raises(ConfigError, match=message):
            settings(f"[workers]\n{workers}")
    with pytest.raises(ConfigError, match="twice"):
        settings(f'[sip]\nbind = "10.0.0.10"\n[workers]\n{secret}\n'
                 f'remote = ["10.0.0.11:5070", "10.0.0.11:5070"]\n')
