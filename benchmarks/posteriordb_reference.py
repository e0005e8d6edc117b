"""Reference moments of the translated posteriordb posteriors, from the database's reference draws.

For every posterior of ``wgfinfer.problems.posteriordb.POSTERIORS`` (or those named), the script reads
``DIR/reference_draws/NAME.json.zip``, maps the draws to the unconstrained scale of the Pyro
translation (``biject_to(support).inv``) and writes, per site and on both scales, the mean, the sd,
their Monte-Carlo standard errors (ArviZ ``mcse`` of the mean and of the sd, both ESS-based) and the
bulk ESS, as JSON.  The package ships the output as
``wgfinfer/problems/posteriordb_data/reference_moments.json``; the script writes only to ``--out``::

    python benchmarks/posteriordb_reference.py --posteriordb ../shared/posteriordb --out /tmp/moments.json
    python benchmarks/posteriordb_reference.py --posteriordb DIR --out /tmp/m.json --names sblri-blr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wgfinfer.problems import posteriordb


def build(root: Path, names: list[str]) -> dict:
    """The JSON document of reference moments of ``names`` from the posteriordb directory ``root``.

    Parameters
    ----------
    root : Path
        posteriordb directory (``reference_draws/``, optionally ``SOURCE_COMMIT``).
    names : list of str
        Registered posterior names.

    Returns
    -------
    dict
        ``{"source_commit", "statistics", "posteriors": {name: moments}}``.
    """
    commit_file = root / "SOURCE_COMMIT"
    return {
        "source_commit": commit_file.read_text().strip() if commit_file.exists() else None,
        "statistics": "mean, sd (ddof=1), se_mean = arviz.mcse(method='mean'), "
        "se_sd = arviz.mcse(method='sd'), ess_bulk = arviz.ess(method='bulk'); per coordinate, "
        "on the unconstrained scale of torch.distributions.biject_to(support) and on the constrained one",
        "posteriors": {
            name: posteriordb.moments_to_json(posteriordb.compute_reference_moments(name, root))
            for name in names
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posteriordb", type=Path, required=True, help="posteriordb directory")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--names", nargs="+", default=sorted(posteriordb.POSTERIORS), help="posteriors")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in posteriordb.POSTERIORS]
    if unknown:
        parser.error(f"no Pyro translation of {unknown}; known: {sorted(posteriordb.POSTERIORS)}")
    document = build(args.posteriordb, args.names)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote reference moments of {len(args.names)} posteriors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
