"""The columns of the Sirene open-data stock files, as INSEE publishes them.

Source: INSEE, « Sirene : fichiers de stock — description des variables » (API Sirene
3.11 schema) of the data.gouv.fr dataset « Base Sirene des entreprises et de leurs
établissements (SIREN, SIRET) », files ``StockUniteLegale_utf8.zip`` and
``StockEtablissement_utf8.zip`` (CSV, comma-separated, UTF-8, one header line). The
``activitePrincipaleNAF25*`` columns were added to both files on 16 December 2025: until
the NAF 2025 revision becomes the official APE in January 2027 the stocks carry the NAF
rév. 2 code (``activitePrincipale*`` with ``nomenclatureActivitePrincipale*`` =
"NAFRev2") and, beside it, the future NAF 2025 code.

The full headers are kept here, in the official order, so that generated test files look
exactly like the real ones; the importer itself only needs the ``*_NEEDED`` columns and
finds them by name (extra or reordered columns are accepted).
"""

from __future__ import annotations

from typing import Literal

from ..errors import CallbotError

UNITE_LEGALE_COLUMNS: tuple[str, ...] = (
    "siren",
    "statutDiffusionUniteLegale",
    "unitePurgeeUniteLegale",
    "dateCreationUniteLegale",
    "sigleUniteLegale",
    "sexeUniteLegale",
    "prenom1UniteLegale",
    "prenom2UniteLegale",
    "prenom3UniteLegale",
    "prenom4UniteLegale",
    "prenomUsuelUniteLegale",
    "pseudonymeUniteLegale",
    "identifiantAssociationUniteLegale",
    "trancheEffectifsUniteLegale",
    "anneeEffectifsUniteLegale",
    "dateDernierTraitementUniteLegale",
    "nombrePeriodesUniteLegale",
    "categorieEntreprise",
    "anneeCategorieEntreprise",
    "dateDebut",
    "etatAdministratifUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "denominationUniteLegale",
    "denominationUsuelle1UniteLegale",
    "denominationUsuelle2UniteLegale",
    "denominationUsuelle3UniteLegale",
    "categorieJuridiqueUniteLegale",
    "activitePrincipaleUniteLegale",
    "nomenclatureActivitePrincipaleUniteLegale",
    "nicSiegeUniteLegale",
    "economieSocialeSolidaireUniteLegale",
    "societeMissionUniteLegale",
    "caractereEmployeurUniteLegale",
    "activitePrincipaleNAF25UniteLegale",
)

ETABLISSEMENT_COLUMNS: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "anneeEffectifsEtablissement",
    "activitePrincipaleRegistreMetiersEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "nombrePeriodesEtablissement",
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "dernierNumeroVoieEtablissement",
    "indiceRepetitionDernierNumeroVoieEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "libelleCommuneEtrangerEtablissement",
    "distributionSpecialeEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "libellePaysEtrangerEtablissement",
    "identifiantAdresseEtablissement",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
    "complementAdresse2Etablissement",
    "numeroVoie2Etablissement",
    "indiceRepetition2Etablissement",
    "typeVoie2Etablissement",
    "libelleVoie2Etablissement",
    "codePostal2Etablissement",
    "libelleCommune2Etablissement",
    "libelleCommuneEtranger2Etablissement",
    "distributionSpeciale2Etablissement",
    "codeCommune2Etablissement",
    "codeCedex2Etablissement",
    "libelleCedex2Etablissement",
    "codePaysEtranger2Etablissement",
    "libellePaysEtranger2Etablissement",
    "dateDebut",
    "etatAdministratifEtablissement",
    "enseigne1Etablissement",
    "enseigne2Etablissement",
    "enseigne3Etablissement",
    "denominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "caractereEmployeurEtablissement",
    "activitePrincipaleNAF25Etablissement",
)

# What the answers need, nothing more: no name of a natural person (nomUniteLegale,
# prenom*, pseudonyme...) and no street address is ever read.
UNITE_LEGALE_NEEDED: tuple[str, ...] = (
    "siren",
    "statutDiffusionUniteLegale",
    "unitePurgeeUniteLegale",
    "dateCreationUniteLegale",
    "dateDebut",
    "etatAdministratifUniteLegale",
    "denominationUniteLegale",
    "categorieJuridiqueUniteLegale",
    "activitePrincipaleUniteLegale",
    "nomenclatureActivitePrincipaleUniteLegale",
    "nicSiegeUniteLegale",
)

ETABLISSEMENT_NEEDED: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "etablissementSiege",
    "etatAdministratifEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
)

Kind = Literal["unite_legale", "etablissement"]

FILE_NAMES: dict[str, str] = {"unite_legale": "StockUniteLegale",
                              "etablissement": "StockEtablissement"}
NEEDED: dict[str, tuple[str, ...]] = {"unite_legale": UNITE_LEGALE_NEEDED,
                                      "etablissement": ETABLISSEMENT_NEEDED}
OFFICIAL: dict[str, tuple[str, ...]] = {"unite_legale": UNITE_LEGALE_COLUMNS,
                                        "etablissement": ETABLISSEMENT_COLUMNS}

# The value of statutDiffusion* for a unit or establishment in the public diffusion; any
# other value ("P": partial diffusion, asked for by the person; "N" in older files) means
# nothing about it may be said.
DIFFUSIBLE = "O"
# categorieJuridiqueUniteLegale of an individual entrepreneur (a natural person).
PERSONNE_PHYSIQUE = "1000"


class SchemaError(CallbotError):
    """A file is not a Sirene stock file the importer can read (says which column)."""


def kind_of(header: list[str], name: str) -> Kind:
    """Which stock file this header belongs to, checked for every column the import needs.

    Decided by the header, never by the file name: a renamed download still imports, and
    a wrong file is refused before anything is written.
    """
    columns = set(header)
    if "siret" in columns or "statutDiffusionEtablissement" in columns:
        kind: Kind = "etablissement"
    elif "statutDiffusionUniteLegale" in columns or "nicSiegeUniteLegale" in columns:
        kind = "unite_legale"
    else:
        raise SchemaError(
            f"{name}: not a Sirene stock file (its header has neither "
            f"statutDiffusionUniteLegale, as StockUniteLegale, nor siret, as "
            f"StockEtablissement); give StockUniteLegale_utf8.zip or "
            f"StockEtablissement_utf8.zip (or their CSV)")
    missing = [c for c in NEEDED[kind] if c not in columns]
    if missing:
        raise SchemaError(
            f"{name}: this {FILE_NAMES[kind]} file lacks the column"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}; download the current "
            f"stock file from data.gouv.fr (Base Sirene des entreprises et de leurs "
            f"établissements)")
    return kind
