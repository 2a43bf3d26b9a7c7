"""Retraining from the console, in a background thread, with its progress and its result.

The new classifier replaces the model file atomically (``IntentClassifier.save`` writes a
temporary file and renames it), so a bot that reloads the file on change never reads half
a model and never drops a call. The page shows the cross-validated accuracy before (the
report saved with the current model) and after.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Config

log = logging.getLogger("callbot.console")
IDLE, RUNNING, DONE, FAILED = "idle", "running", "done", "failed"


@dataclass
class RetrainStatus:
    state: str = IDLE
    progress: float = 0.0
    step: str = ""
    by: str | None = None
    started: float | None = None
    finished: float | None = None
    before: float | None = None        # cross-validated in-scope accuracy of the old model
    after: float | None = None
    n_before: int | None = None        # phrasings
    n_after: int | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Retrainer:
    """At most one training at a time per console."""

    def __init__(self, config: Config):
        self.config = config
        self.status = RetrainStatus()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._info: tuple[tuple, dict[str, Any]] = ((), {})

    @property
    def model_path(self):
        return self.config.paths.models / self.config.nlu.model

    def model_info(self) -> dict[str, Any]:
        """The installed model's KB digest and report, cached until the file changes
        (unpickling it takes a second or two)."""
        from ..intents import IntentClassifier

        try:
            st = self.model_path.stat()
        except OSError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._info[0] != stamp:
            try:
                clf = IntentClassifier.load(self.model_path, self.config.paths.models)
                info = {"kb_digest": clf.kb_digest, **clf.report}
            except Exception:
                info = {}
            self._info = (stamp, info)
        return self._info[1]

    def kb_changed(self) -> bool:
        """True when kb/ holds phrasings the installed model was not trained on."""
        from ..intents import kb_digest
        from ..kb import load_kb

        info = self.model_info()
        return bool(info) and info.get("kb_digest") != kb_digest(load_kb(self.config.paths.kb))

    def start(self, user: str) -> bool:
        """Start a training; False when one is already running."""
        with self._lock:
            if self.status.state == RUNNING:
                return False
            self.status = RetrainStatus(state=RUNNING, by=user, started=time.time(),
                                        step="loading the knowledge base")
            self._thread = threading.Thread(target=self._run, name="retrain", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> RetrainStatus:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def _progress(self, line: str) -> None:
        s = self.status
        s.log.append(line.strip())
        folds = self.config.console.retrain_folds
        m = re.search(r"fold (\d+)/(\d+)", line)
        if m:
            s.progress = max(0.03, (int(m.group(1)) - 1) / (folds + 1))
            s.step = f"cross-validation, fold {m.group(1)} of {m.group(2)}"
        elif "embedding" in line:
            s.step = "reading the phrasings' meaning (embeddings)"
        elif "final model" in line:
            s.progress = folds / (folds + 1)
            s.step = "fitting the final model"

    def _run(self) -> None:
        from ..intents import IntentClassifier, activate, train
        from ..kb import check_kb, load_kb

        s = self.status
        try:
            try:
                old = IntentClassifier.load(self.model_path, self.config.paths.models)
                s.before = old.report.get("cv_accuracy")
                s.n_before = old.report.get("n_phrasings")
            except Exception:
                s.before = None
            kb = load_kb(self.config.paths.kb)
            errors = [i for i in check_kb(kb) if i.level == "error"]
            if errors:
                raise RuntimeError(f"the knowledge base has {len(errors)} error(s), first: "
                                   f"{errors[0]}")
            clf, report = train(kb, folds=self.config.console.retrain_folds, log=self._progress,
                                encoder=self.config.nlu.encoder or None,
                                threads=self.config.asr.threads,
                                models_dir=self.config.paths.models)
            s.step = "saving the model"
            activate(clf, self.model_path)     # refused (with why) if clearly worse
            IntentClassifier.load(self.model_path, self.config.paths.models)     # readable before we say it is done
            s.after, s.n_after = report.cv_accuracy, report.n_phrasings
            s.progress, s.step, s.state = 1.0, "done", DONE
            log.info("console: classifier retrained by %s: accuracy %.3f -> %.3f", s.by,
                     s.before or 0.0, s.after)
        except Exception as exc:
            s.state, s.error, s.step = FAILED, str(exc), "failed"
            log.exception("console: retraining failed")
        finally:
            s.finished = time.time()
