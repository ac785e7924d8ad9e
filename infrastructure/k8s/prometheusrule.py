"""Write ``base/prometheusrule.yaml``: the repository's alert rules as a PrometheusRule.

The one source of the rules is ``monitoring/prometheus/rules/recsys.yml`` (unit-tested with
promtool). A PrometheusRule's ``spec`` has the same ``groups:`` layout as a Prometheus rules
file, so the file is copied verbatim (comments included), indented under ``spec:``; kustomize
cannot read it directly because it lies outside the kustomization's folder.

    python infrastructure/k8s/prometheusrule.py          # regenerate
    python infrastructure/k8s/prometheusrule.py --check  # exit 1 if the committed copy drifted

``tests/infrastructure/test_k8s.py`` fails when the committed file and the rules differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "rules" / "recsys.yml"
OUTPUT = Path(__file__).resolve().parent / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from monitoring/prometheus/rules/recsys.yml by infrastructure/k8s/prometheusrule.py:
# do not edit; change the rules file and run the script (a test fails when the two differ).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: recsys-api
  labels:
    app.kubernetes.io/name: recsys-api
    app.kubernetes.io/part-of: recsys
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest holding ``rules_text`` (a rules file) as its ``spec``.

    >>> print(render("groups:\\n  - name: g\\n\\n    rules: []\\n"), end="")  # doctest: +ELLIPSIS
    # GENERATED ...
    spec:
      groups:
        - name: g
    <BLANKLINE>
          rules: []
    """
    body = "".join(
        f"  {line}" if line.strip() else "\n" for line in rules_text.splitlines(keepends=True)
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write the manifest, or with ``--check`` report whether the committed one is current."""
    parser = argparse.ArgumentParser(
        description="Write base/prometheusrule.yaml from the alert rules."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != expected:
            print(
                f"{OUTPUT.relative_to(REPO)} is stale: run {Path(__file__).name}", file=sys.stderr
            )
            return 1
        return 0
    OUTPUT.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
