"""The knowledge-base improvement loop: review queue → phrasings → retrain; and the KB pages.

An editor assigns a not-understood (or barely understood) utterance to an intent, marks it
out of scope, or dismisses it; assigned and out-of-scope utterances become training
phrasings at once, "retrain" turns them into a new model.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..kb import OUT_OF_SCOPE, load_kb
from ..transcripts.records import ASSIGNED, DISMISSED, OUT_OF_SCOPE_ACTION
from .kbedit import KbEditError, add_phrasing
from .web import Console, page

ACTIONS = {"assign": ASSIGNED, "out_of_scope": OUT_OF_SCOPE_ACTION, "dismiss": DISMISSED}


def _intents(console: Console) -> list[dict]:
    kb = load_kb(console.config.paths.kb)
    return [{"id": t["id"], "title": kb.intents[t["id"]].title if t["id"] in kb.intents
             else t.get("title", t["id"])} for t in kb.taxonomy]


def routes(console: Console) -> list[Route]:
    store = console.store
    kb_root = console.config.paths.kb

    @page(console)
    async def review(request: Request) -> Response:
        below = console.config.console.review_below
        items = await console.db(store.review_candidates, below)
        grouping = await console.db(console.groups.get, items)   # never clusters here
        intents = await console.db(_intents, console)
        recent = await console.db(store.reviews, 15)
        changed = await console.db(console.retrainer.kb_changed)
        return console.render(request, "review.html", groups=grouping.groups,
                              grouped=grouping.ready, intents=intents, n_items=len(items),
                              below=below, recent=recent, status=console.retrainer.status,
                              kb_changed=changed, nav="review")

    @page(console, edit=True)
    async def review_action(request: Request) -> Response:
        form = request.state.form
        s = request.state.session
        action = ACTIONS.get(str(form.get("action", "")))
        intent = str(form.get("intent", "")).strip() or None
        keys = [str(k) for k in form.getlist("item")]
        if action is None or not keys:
            s.flash.append(("error", "Choose an action for at least one utterance."))
            return RedirectResponse("/review", 303)
        if action == ASSIGNED and not intent:
            s.flash.append(("error", "Choose the intent to assign the utterance to."))
            return RedirectResponse("/review", 303)
        done = 0
        said: dict[str, int] = {}          # one message per distinct phrasing
        for key in keys:
            call_id, _, seq = key.rpartition("|")
            if not seq.isdigit():
                continue
            u = await console.db(store.utterance, call_id, int(seq))
            if u is None or not u["text"]:
                continue
            target = intent if action == ASSIGNED else OUT_OF_SCOPE
            try:
                if action != DISMISSED:
                    added = await console.db(add_phrasing, kb_root, target, u["text"], s.user,
                                             call_id)
                    if added.text not in said:
                        said[added.text] = len(s.flash)
                        where = f"kb/phrasings/{added.path.name}"
                        s.flash.append(("ok", f"«{added.text}» added to {target} ({where})"
                                        if added.added else
                                        f"«{added.text}» was already a phrasing of {target}"))
            except KbEditError as exc:
                if str(exc) not in said:
                    said[str(exc)] = len(s.flash)
                    s.flash.append(("error", str(exc)))
                continue
            await console.db(store.add_review, call_id, int(seq), action,
                             target if action != DISMISSED else None, s.user)
            done += 1
        if action == DISMISSED and done:
            s.flash.append(("ok", f"{done} utterance(s) dismissed."))
        elif done and action != DISMISSED:
            s.flash.append(("ok", "Retrain the classifier for the bot to learn them."))
        return RedirectResponse("/review", 303)

    @page(console)
    async def retrain_page(request: Request) -> Response:
        return console.render(request, "retrain.html", status=console.retrainer.status,
                              folds=console.config.console.retrain_folds, nav="review")

    @page(console, edit=True)
    async def retrain_start(request: Request) -> Response:
        s = request.state.session
        if not console.retrainer.start(s.user):
            s.flash.append(("error", "A training is already running."))
        return RedirectResponse("/retrain", 303)

    @page(console)
    async def retrain_status(request: Request) -> Response:
        return JSONResponse(console.retrainer.status.to_dict())

    @page(console)
    async def kb_index(request: Request) -> Response:
        def collect() -> list[dict]:
            kb = load_kb(kb_root)
            rows = []
            for iid in kb.taxonomy_ids + [OUT_OF_SCOPE]:
                path = kb_root / "phrasings" / f"{iid}.txt"
                text = path.read_text(encoding="utf-8") if path.exists() else ""
                rows.append({"id": iid, "title": kb.intents[iid].title if iid in kb.intents
                             else "Hors sujet (out of scope)",
                             "phrasings": len(kb.phrasings_of(iid)),
                             "console": text.count("\n# console ") + text.startswith("# console ")})
            return rows
        return console.render(request, "kb.html", intents=await console.db(collect), nav="kb")

    @page(console)
    async def kb_intent(request: Request) -> Response:
        iid = request.query_params.get("id", "")
        kb = await console.db(load_kb, kb_root)
        if iid not in kb.taxonomy_ids and iid != OUT_OF_SCOPE:
            return console.render(request, "error.html", 404, message=f"No intent {iid!r}.")
        path = kb_root / "phrasings" / f"{iid}.txt"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        entries = []
        origin = None
        for line in lines:
            s = line.strip()
            if s.startswith("# console "):
                origin = s[2:]
            elif s and not s.startswith("#"):
                entries.append({"text": s, "origin": origin})
                origin = None
        entries.reverse()                       # the console's additions come last: show first
        intent = kb.intents.get(iid)
        return console.render(request, "kb_intent.html", iid=iid, intent=intent,
                              entries=entries, nav="kb")

    return [Route("/review", review, methods=["GET"]),
            Route("/review", review_action, methods=["POST"]),
            Route("/retrain", retrain_page, methods=["GET"]),
            Route("/retrain", retrain_start, methods=["POST"]),
            Route("/api/retrain", retrain_status),
            Route("/kb", kb_index), Route("/kb/intent", kb_intent)]
