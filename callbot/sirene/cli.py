"""`callbot sirene import|lookup`: the register copy from a terminal.

Registered through the "callbot.commands" entry point, like every layer's commands.
"""

from __future__ import annotations

import json

from ..errors import CallbotError


def _config(args):
    from ..config import load_config

    return load_config(getattr(args, "config", None))


def cmd_import(args) -> int:
    from ..progress import StderrProgress
    from .importer import import_files

    report = import_files(_config(args), args.files, progress=StderrProgress(unit="rows"))
    for f in report.files:
        extra = f", {f.purged:,} purged left out" if f.kind == "unite_legale" else ""
        print(f"{f.name}: {f.rows:,} rows in {f.seconds:.1f} s ({f.rate:,.0f} rows/s): "
              f"{f.kept:,} kept, {f.not_diffusible:,} outside the public diffusion{extra}")
    names = {"unite_legale": "StockUniteLegale", "etablissement": "StockEtablissement"}
    for kind in report.carried_over:
        print(f"{names[kind]}: not given, kept from the previous import")
    for kind in report.missing:
        print(f"{names[kind]}: not given and never imported: "
              + ("head offices (postal code, commune) will be unknown"
                 if kind == "etablissement" else "every SIREN will be 'not found'"))
    print(f"register {report.where} replaced ({report.seconds:.1f} s)")
    return 0


def _grouped(siren: str) -> str:
    return f"{siren[:3]} {siren[3:6]} {siren[6:]}" if len(siren) == 9 else siren


def describe(answer) -> list[str]:
    """The lookup in words, as an operator checks what the bot may say."""
    number = answer.siret or answer.siren
    if not answer.valid:
        return [f"{number or '(no digits)'}: not a valid SIREN (9 digits) or SIRET (14 digits):"
                f" wrong length or check digit"]
    head = f"SIREN {_grouped(answer.siren)}" + (f" (SIRET {answer.siret})" if answer.siret
                                                 else "")
    if not answer.found:
        return [f"{head}: not in the register"
                + (" (no such establishment)" if answer.siret else "")]
    if not answer.diffusible:
        return [f"{head}: in the register, outside the public diffusion: nothing about it "
                f"may be said"]
    state = {"A": "active", "C": "closed (cessée)"}.get(answer.etat_administratif or "",
                                                         answer.etat_administratif or "?")
    lines = [f"{head}: {state} since {answer.date_etat or '?'}, created "
             f"{answer.date_creation or '?'}"]
    if answer.denomination:
        lines.append(f"name: {answer.denomination}")
    lines.append(f"APE {answer.ape or '?'}" + (f": {answer.ape_label}" if answer.ape_label
                                                else " (no label known for this code)"))
    if answer.ape_naf25:
        lines.append(f"NAF 2025 {answer.ape_naf25}" + (f": {answer.ape_naf25_label}"
                                                       if answer.ape_naf25_label else ""))
    lines.append(f"legal category {answer.categorie_juridique or '?'}"
                 + (" (individual entrepreneur: no name nor place is given)"
                    if answer.personne_physique else ""))
    if answer.siege:
        lines.append(f"head office: {answer.siege.code_postal or ''} "
                     f"{answer.siege.commune or ''}".rstrip())
    if answer.siret and answer.etablissement_etat:
        lines.append("this establishment: " + {"A": "active", "F": "closed (fermé)"}.get(
            answer.etablissement_etat, answer.etablissement_etat))
    return lines


def cmd_lookup(args) -> int:
    from .lookup import Register

    register = Register.open(_config(args))
    try:
        if not register.available:
            raise CallbotError(f"no Sirene register in {register.label}: import the stock "
                               f"files first (`callbot sirene import StockUniteLegale_utf8.zip "
                               f"StockEtablissement_utf8.zip`)")
        answer = register.lookup(args.number)
    finally:
        register.close()
    if args.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False))
    else:
        for line in describe(answer):
            print(line)
    return 0


def register(sub) -> None:
    """Add `sirene` to the `callbot` command line."""
    si = sub.add_parser("sirene", help="the public Sirene register copy: import, lookup")
    ssub = si.add_subparsers(dest="sirene_command", metavar="ACTION")

    imp = ssub.add_parser("import", help="load the monthly stock files (StockUniteLegale, "
                                         "StockEtablissement; CSV or zip) and swap them in")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.set_defaults(func=cmd_import)

    lk = ssub.add_parser("lookup", help="what the bot may say about a SIREN or SIRET")
    lk.add_argument("number", metavar="SIREN_OR_SIRET",
                    help="9 or 14 digits, spaces allowed (quote them)")
    lk.add_argument("--json", action="store_true", help="one JSON object")
    lk.set_defaults(func=cmd_lookup)

