"""The ``callbot`` command line: one entry point for integrators, supervisors and tests.

Every user error (bad file, missing model, wrong configuration) ends as one line on stderr
and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .config import Config, load_config
from .errors import CallbotError, KbError


def _config(args) -> Config:
    return load_config(getattr(args, "config", None))


def _err(msg: str) -> None:
    print(f"callbot: {msg}", file=sys.stderr)


# --- models -------------------------------------------------------------------------------
def cmd_models_install(args) -> int:
    from .install import install, print_report

    config = _config(args)
    report = install(config, Path(args.from_dir) if args.from_dir else None,
                     test_models=args.test_models)
    print_report(report)
    return 0 if report.ok else 1


def cmd_models_list(args) -> int:
    from .install import list_models, print_list

    print_list(list_models(_config(args)))
    return 0


# --- knowledge base and training ---------------------------------------------------------------
def cmd_kb_check(args) -> int:
    from .kb import check_kb, load_kb

    config = _config(args)
    kb = load_kb(config.paths.kb)
    issues = check_kb(kb)
    for issue in issues:
        print(issue)
    errors = sum(i.level == "error" for i in issues)
    warnings = len(issues) - errors
    n_in = sum(p.intent != "hors_sujet" for p in kb.phrasings)
    print(f"{len(kb.intents)} intents, {n_in} phrasings, "
          f"{len(kb.phrasings) - n_in} out-of-scope phrasings, {len(kb.prompts)} prompts: "
          f"{errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def prerendered_texts(kb) -> list[str]:
    """Every sentence known before a call: answers, prompts, prompts with each topic.
    Prompts with other fields ({date}, {code}... of a register look-up) are completed and
    rendered in the call."""
    from .kb import TOPIC_PROMPTS

    texts: list[str] = [i.answer for i in kb.intents.values()]
    texts += [t for k, t in kb.prompts.items() if k not in TOPIC_PROMPTS and "{" not in t]
    texts += [kb.prompts[k].format(topic=i.topic) for k in TOPIC_PROMPTS if k in kb.prompts
              for i in kb.intents.values()]
    return list(dict.fromkeys(texts))


def render_all(config: Config, kb, tts) -> tuple[int, int]:
    """Pre-render every answer and prompt (normal and slow) so calls need no synthesis."""
    from .progress import StderrProgress

    jobs = [(t, slow) for t in prerendered_texts(kb) for slow in (False, True)]
    rendered = 0
    bar = StderrProgress(unit="sentences")
    label = f"rendering speech ({tts.engine.name}, {tts.engine.voice})"
    for done, (text, slow) in enumerate(jobs, 1):
        if not tts.contains(text, slow):
            rendered += 1
        tts.get(text, slow)
        bar(label, done, len(jobs))
    return len(jobs), rendered


def cmd_train(args) -> int:
    from .intents import activate, train
    from .kb import check_kb, load_kb

    config = _config(args)
    kb = load_kb(config.paths.kb)
    errors = [i for i in check_kb(kb) if i.level == "error"]
    if errors:
        for issue in errors[:20]:
            print(issue, file=sys.stderr)
        raise KbError(f"the knowledge base has {len(errors)} error(s): fix them "
                      f"(`callbot kb check`) and train again")
    print(f"Training the intent classifier on {len(kb.phrasings)} phrasings "
          f"({len(kb.intents)} intents + out of scope)...", file=sys.stderr)
    clf, report = train(kb, folds=args.folds, encoder=config.nlu.encoder or None,
                        threads=config.asr.threads,
                        models_dir=config.paths.models)
    path = config.paths.models / config.nlu.model
    th = report.thresholds
    print(f"cross-validated ({args.folds} folds): in-scope accuracy {report.cv_accuracy:.3f}, "
          f"out-of-scope rejected {report.cv_oos_rejected:.3f}, "
          f"in-scope wrongly rejected {report.cv_false_reject:.3f}")
    print(f"thresholds: reject below {th.reject:.2f}, answer at once from {th.confident:.2f} "
          f"with a margin of {th.margin:.2f}, confirm in between")
    if report.confusions:
        print("most frequent confusions (expected -> got, count): " + "; ".join(
            f"{a} -> {b} ({n})" for a, b, n in report.confusions[:5]))
    before = activate(clf, path, force=args.force)
    was = f"; the model it replaces ({before:.3f}) is kept as {path.name}.prev" \
        if before is not None else ""
    print(f"saved {path} ({report.seconds:.1f} s){was}")
    if not args.no_render:
        from .tts import SpeechCache, cache_root, load_tts

        tts = SpeechCache(load_tts(config), cache_root(config))
        total, rendered = render_all(config, kb, tts)
        print(f"speech cache: {total} sentences ready ({rendered} rendered now) "
              f"with {tts.engine.name} voice {tts.engine.voice}")
    return 0


def cmd_nlu_classify(args) -> int:
    from .intents import load_classifier

    clf = load_classifier(_config(args))
    for line in sys.stdin:
        text = line.rstrip("\n")
        u = clf.classify(text)
        sys.stdout.write(json.dumps(u.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    return 0


# --- simulation ------------------------------------------------------------------------------------
class _TurnAction(argparse.Action):
    """--text/--wav/--dtmf keep their order on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .simulate import CallerTurn

        turns = getattr(namespace, "turns", None) or []
        turns.append(CallerTurn(self.dest.split("_", 1)[1], values))
        namespace.turns = turns


def cmd_simulate(args) -> int:
    from .audio import write_wav
    from .session import Engines
    from .simulate import caller_turns_from_lines, prepare, simulate, transcript_lines

    config = _config(args)
    if args.scenarios:
        return _run_scenarios(config, args)
    turns = prepare(args.turns or [])
    interactive = not turns
    engines = Engines.load(config, asr=any(t.kind == "wav" for t in turns) or interactive)

    def show(turn) -> None:
        if not args.json:
            for line in transcript_lines(turn):
                print(line, flush=True)

    if interactive:
        if sys.stdin.isatty():
            print("Interactive call: type what the caller says (Enter on an empty line waits; "
                  "'dtmf:0' presses keys; 'wav:FILE' plays audio; Ctrl-D hangs up the script).",
                  file=sys.stderr)
        source = caller_turns_from_lines(sys.stdin)
    else:
        source = iter(turns)
    recorder = store = None
    if args.save_transcript:
        import uuid

        from .transcripts import CallInfo, CallRecorder, open_store

        store = open_store(config)
        recorder = CallRecorder(store, CallInfo(call_id=f"sim-{uuid.uuid4().hex[:12]}",
                                                worker="simulate"))
    try:
        result = simulate(engines, source, on_turn=show, recorder=recorder)
    finally:
        if store is not None:
            store.close()
    if args.out_audio:
        write_wav(args.out_audio, result.bot_audio)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=None))
    else:
        print(f"== {result.outcome} after {result.duration_ms / 1000:.1f} s of call")
    return 0


def _run_scenarios(config: Config, args) -> int:
    """Play every scenario of a file; 0 when all are handled as expected."""
    from .scenarios import load_scenarios, run_scenarios
    from .session import Engines

    scenarios = load_scenarios(args.scenarios)
    results = run_scenarios(Engines.load(config, asr=False), scenarios)
    for r in results:
        if args.json:
            print(json.dumps(r.to_json(), ensure_ascii=False))
        else:
            print(f"{'ok  ' if r.passed else 'FAIL'} {r.scenario.id}"
                  + "".join(f"\n       {f}" for f in r.failures))
    passed = sum(r.passed for r in results)
    print(f"{passed}/{len(results)} calls handled as expected", file=sys.stderr)
    return 0 if passed == len(results) else 1


def cmd_transcribe(args) -> int:
    """One JSON line per file: its text, and what decoding it cost."""
    from .asr import load_asr
    from .audio import read_wav
    from .transcribe import transcribe_pcm

    config = _config(args)
    for f in args.files:   # check every file before loading a model
        read_wav(f)
    engine = load_asr(config, args.engine, recordings=True)
    engine.warm(b"\x00" * 16000)   # first-use costs (threads, buffers) not in the first file
    for f in args.files:
        result = transcribe_pcm(engine, read_wav(f).tobytes(), config.endpointing)
        print(json.dumps({"file": f, "text": result.text, "engine": engine.name,
                          "duration_s": round(result.duration_s, 2),
                          "decode_s": round(result.decode_s, 3), "windows": result.windows},
                         ensure_ascii=False), flush=True)
    return 0


def cmd_config_check(args) -> int:
    """Validate every section (the core's and the other layers') and print the result."""
    from .config import plugin_sections

    config = _config(args)
    tables = config.to_dict()
    for name, ep in plugin_sections().items():
        tables[name] = ep.load()(config)      # raises ConfigError naming the key
    print(f"# effective configuration (from {config.source}; secrets masked)")
    for section, table in tables.items():
        lists = {k: v for k, v in table.items() if isinstance(v, list) and v
                 and all(isinstance(x, dict) for x in v)}
        print(f"\n[{section}]")
        for key, value in table.items():
            if key not in lists:
                print(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        for key, items in lists.items():
            for item in items:
                print(f"\n[[{section}.{key}]]")
                for k, v in item.items():
                    print(f"{k} = {json.dumps(v, ensure_ascii=False)}")
    return 0


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callbot", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML configuration (default: the embedded one, "
                                    "or $CALLBOT_CONFIG)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="install and list speech models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    inst = msub.add_parser("install", help="install the models of models/manifest.toml, "
                                           "verifying every checksum")
    inst.add_argument("--from", dest="from_dir", metavar="DIR",
                      help="take model files from DIR instead of downloading them")
    inst.add_argument("--test-models", action="store_true",
                      help="also install the engine stand-ins used by the tests")
    inst.set_defaults(func=cmd_models_install)
    msub.add_parser("list", help="what is installed and which engines will be used"
                    ).set_defaults(func=cmd_models_list)

    kb = sub.add_parser("kb", help="knowledge base tools")
    ksub = kb.add_subparsers(dest="kb_command", metavar="ACTION")
    ksub.add_parser("check", help="validate kb/").set_defaults(func=cmd_kb_check)

    tr = sub.add_parser("train", help="train the intent classifier and pre-render all answers")
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    tr.add_argument("--no-render", action="store_true", help="skip the speech pre-rendering")
    tr.add_argument("--force", action="store_true", help="activate the new model even if it "
                    "is more than 2 points less accurate than the one in service")
    tr.set_defaults(func=cmd_train)

    nlu = sub.add_parser("nlu", help="intent classification")
    nsub = nlu.add_subparsers(dest="nlu_command", metavar="ACTION")
    nsub.add_parser("classify", help="one utterance per line on stdin, one JSON per line out"
                    ).set_defaults(func=cmd_nlu_classify)

    sim = sub.add_parser("simulate", help="play a whole call offline (text, WAV or keys)")
    sim.add_argument("--text", dest="turn_text", action=_TurnAction, metavar="T",
                     help="a caller turn as text (repeatable, in order)")
    sim.add_argument("--wav", dest="turn_wav", action=_TurnAction, metavar="F",
                     help="a caller turn as a WAV file (repeatable, in order)")
    sim.add_argument("--dtmf", dest="turn_dtmf", action=_TurnAction, metavar="KEYS",
                     help="a caller turn as keypad keys (repeatable, in order)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--out-audio", metavar="WAV", help="write the bot's audio (8 kHz) here")
    sim.add_argument("--save-transcript", action="store_true",
                     help="keep the call in the transcript store, like a real call")
    sim.add_argument("--scenarios", metavar="FILE",
                     help="play every scripted call of FILE (JSON lines: turns, expected "
                          "intents and outcome) and say which are not handled as expected")
    sim.set_defaults(func=cmd_simulate, turns=None)

    tsc = sub.add_parser("transcribe", help="transcribe WAV files, one JSON line each")
    tsc.add_argument("files", nargs="+", metavar="FILE")
    tsc.add_argument("--engine", choices=["whisper", "vosk"], help="override asr.engine")
    tsc.set_defaults(func=cmd_transcribe)

    cfg = sub.add_parser("config", help="configuration tools")
    csub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    csub.add_parser("check", help="validate and print the effective configuration"
                    ).set_defaults(func=cmd_config_check)
    # Other layers (the SIP side) add their commands here; the core does not import them.
    for ep in entry_points(group="callbot.commands"):
        try:
            register = ep.load()
        except Exception as exc:  # a broken optional layer must not take the core down
            _err(f"warning: commands of '{ep.name}' unavailable ({exc}); "
                 f"reinstall with `make setup`")
            continue
        register(sub)
    _config_everywhere(p)
    return p


def _config_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` after any command too (``callbot serve --config FILE``), as readers
    of a command's documentation write it; before the command it works as well."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--config" in a.option_strings for a in child._actions):
                    child.add_argument("--config", default=argparse.SUPPRESS,
                                       help="TOML configuration (same as before the command)")
                _config_everywhere(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # A group without its action ("callbot models"): show that group's help.
        parser.parse_args((argv or sys.argv[1:]) + ["--help"])
        return 2
    try:
        return int(args.func(args) or 0)
    except CallbotError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
