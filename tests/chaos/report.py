"""docs/chaos.md from a run of the suite: ``python -m tests.chaos.report docs/chaos.md``.

Runs the tests named in ROWS (the chaos, fuzz and security tests here, and the older ones
they extend), and writes one table row per case: what is done, the expected outcome (as
stated in the test), the result of this run, and what the test measured (its
``record_property`` values). A strict xfail row is a known bug; its reason says what goes
wrong and where. ``--only-new`` runs tests/chaos and tests/fuzz only and marks the others
"not run".
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
C, IT, R, F = "tests/chaos/", "tests/integration/", "tests/registry/", "tests/fuzz/"


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    case: str
    expected: str
    test: str  # a node id, or a prefix of parametrized ones


ROWS = [
    # -- faults under load
    Row("Faults under load", "registry SIGKILLed and kept down, traffic continues, proxies "
        "catch up", "0 failed", IT + "test_static_stability.py::test_registry_killed_traffic_"
        "continues_and_proxies_catch_up"),
    Row("Faults under load", "registry restarted with state intact (CA, tokens, catalog, "
        "epoch, versions kept)", "state kept", R + "server/test_restart.py::test_restart_keeps"
        "_ca_tokens_catalog_epoch_and_versions"),
    Row("Faults under load", "registry restarted with catalog and epoch wiped (CA kept): "
        "proxies get an empty catalog from a new epoch", "0 failed (grace period)",
        C + "test_registry_state.py::test_registry_with_catalog_wiped_does_not_empty_the_"
        "proxies"),
    Row("Faults under load", "registry restarted with the whole state dir wiped (new CA)",
        "0 failed; proxies cannot reconnect nor renew, keep serving on old SVIDs",
        C + "test_registry_state.py::test_registry_with_state_dir_wiped_new_ca_proxies_keep_"
        "serving"),
    Row("Faults under load", "certificate renewal under load (60 s TTL)", "0 failed",
        IT + "test_static_stability.py::test_certificate_renewal_under_load_fails_nothing"),
    Row("Faults under load", "config swap every 0.5 s under load", "0 failed",
        IT + "test_static_stability.py::test_config_swap_every_half_second_under_load_fails_"
        "nothing"),
    Row("Faults under load", "registry down 40 s past the 60 s certificates' renewal time, "
        "under load", "0 failed; alert metric; check names the outage and each certificate's "
        "life; renewal once back", C + "test_registry_outage.py::"),
    Row("Faults under load", "a streaming response and a WebSocket opened before 4 config "
        "pushes", "both complete", IT + "test_http_semantics.py::test_long_response_and_"
        "websocket_survive_config_swaps"),
    Row("Faults under load", "sidecar restarted under load (SIGTERM drain, new proxy, new "
        "token)", "0 failed, exit 0", C + "test_sidecar_restart.py::"),
    Row("Faults under load", "upstream app SIGKILLed (3 replicas, seed policy)",
        "<= 0.1 % failed, ejected", C + "test_upstream_faults.py::test_upstream_killed"),
    Row("Faults under load", "upstream app hung (SIGSTOP)", "<= 0.1 % failed",
        C + "test_upstream_faults.py::test_upstream_hung"),
    Row("Faults under load", "upstream answering 503", "<= 0.1 % failed, ejected",
        C + "test_upstream_faults.py::test_upstream_answering_503"),
    Row("Faults under load", "seed retry + ejection on one failing replica of two",
        "0 failed", IT + "test_resilience.py::test_seed_policy_retries_to_the_other_replica"),
    Row("Faults under load", "saturation: 3 x 120 concurrent vs a pool of 2+2",
        "fast 503 UO, RSS < 200 MB, 0 failed after", C + "test_overload.py::test_saturation"),
    Row("Faults under load", "pool overflow (6 requests)", "503 UO",
        IT + "test_resilience.py::test_connection_pool_overflow_is_a_fast_503_uo"),
    Row("Faults under load", "2000 sockets held, proxy fd limit 1024", "fds <= 1024, RSS "
        "< 200 MB, legit served", C + "test_overload.py::test_connection_flood"),
    Row("Faults under load", "200 slow-loris sockets (1 byte / 0.5 s)", "all cut, legit "
        "0 failed", C + "test_overload.py::test_slow_loris_from_200"),
    Row("Faults under load", "one slow-loris socket", "cut off",
        IT + "test_overload_and_tcp.py::test_slow_loris_is_cut_off_while_others_are_served"),
    Row("Faults under load", "connection ceiling (--max-connections)", "extra refused",
        IT + "test_overload_and_tcp.py::test_connection_ceiling_refuses_extra_connections_only"),
    # -- hostile input
    Row("Hostile input", "HTTP/1.1 framing and smuggling, both directions (docs/"
        "hostile-input.md)", "refused, nothing reaches the app", IT + "test_framing.py::"),
    Row("Hostile input", "HTTP semantics (Upgrade, 1.0 keep-alive, ...)", "see "
        "docs/hostile-input.md", IT + "test_http_semantics.py::"),
    Row("Hostile input", "path normalisation vs DENY /admin* (`/a/../admin`, `/%2e%2e/`, "
        "`//admin`, `/admin%2F`, `\\admin`, `/%61dmin`, ...)", "403/400, nothing reaches the "
        "app; `/ADMIN` allowed (case-sensitive)", C + "test_authz_bypass.py::test_path_"),
    Row("Hostile input", "spoofed x-forwarded-client-cert / x-spiffe-id", "principal from "
        "the certificate only", C + "test_authz_bypass.py::test_spoofed_"),
    Row("Hostile input", "TLS: plaintext, no cert, foreign CA, expired", "refused, counted",
        IT + "test_mtls.py::"),
    Row("Hostile input", "TLS: certificate signed by the mesh CA (control)", "served",
        C + "test_tls_identity.py::test_a_good_certificate"),
    Row("Hostile input", "TLS: two URI SANs, CA:true, SAN with CR/LF, other trust domain, "
        "trust-domain ID leaf, no SAN, DNS SAN only, non-SPIFFE URI, not yet valid, "
        "serverAuth-only", "refused, counted", C + "test_tls_identity.py::test_hostile_"),
    Row("Hostile input", "join and CA abuse (reused, expired, forged, wrong-identity tokens; "
        "CSR asking CA:true, SANs, long life)", "refused or clamped",
        R + "server/test_auth.py::"),
    Row("Hostile input", "config bombs, garbage, links (loader)", "clear error",
        R + "config/test_robustness.py::"),
    Row("Hostile input", "hostile file in a RUNNING registry: truncated, binary, 10 MB, deep "
        "nesting, alias bomb, symlink loop", "error in /v1/status, last good kept, RSS < "
        "300 MB, 0 failed", C + "test_config_hostile.py::test_hostile_file"),
    Row("Hostile input", "files vanishing mid-read (create/delete churn)", "survives, last "
        "good kept", C + "test_config_hostile.py::test_files_vanishing"),
    # -- fuzzing
    Row("Fuzzing", "HTTP/1.1 parsers: mutations, random bytes, render->parse round trips",
        "only ProtocolError; split-invariant", F + "test_http1.py::"),
    Row("Fuzzing", "HTTP/1.1 parsers (older properties)", "split-invariant",
        "tests/proxy/http1/test_properties.py::"),
    Row("Fuzzing", "route matching vs a reference matcher", "agree",
        F + "test_routing.py::test_first_match"),
    Row("Fuzzing", "route matching: regex with ignoreUriCase", "case-sensitive (Istio)",
        F + "test_routing.py::test_ignore_uri_case"),
    Row("Fuzzing", "SPIFFE ID parsing vs the spec grammar", "agree", F + "test_spiffe.py::"),
    Row("Fuzzing", "config loader on mutated real configs", "no internal error, positions",
        F + "test_config_loader.py::"),
    # -- security defaults
    Row("Security defaults", "key and state files 0600, state dirs 0700 after a real start "
        "and join", "0600 / 0700", C + "test_security_defaults.py::test_state_files"),
    Row("Security defaults", "proxy home directory MESH_HOME/proxies/<id>", "0700",
        C + "test_security_defaults.py::test_proxy_home"),
    Row("Security defaults", "registry API and monitor on 127.0.0.1 by default", "127.0.0.1",
        C + "test_security_defaults.py::test_registry_api"),
    Row("Security defaults", "proxy admin on 127.0.0.1 by default", "127.0.0.1",
        C + "test_security_defaults.py::test_proxy_admin"),
    Row("Security defaults", "registry API refuses all but a mesh identity or the operator",
        "401/403", R + "server/test_auth.py::"),
]


class Collector:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.props: dict[str, list[tuple[str, Any]]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nid = report.nodeid
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            if hasattr(report, "wasxfail"):
                self.outcomes[nid] = "xfail" if report.outcome == "skipped" else "XPASS"
                self.reasons[nid] = str(report.wasxfail)
            else:
                self.outcomes[nid] = report.outcome
                if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                    self.reasons[nid] = str(report.longrepr[2])
            self.props[nid] = list(report.user_properties)


def _result(c: Collector, prefix: str) -> tuple[str, str]:
    ids = [n for n in c.outcomes if n.startswith(prefix)]
    if not ids:
        return "not run", ""
    counts: dict[str, int] = defaultdict(int)
    for n in ids:
        counts[c.outcomes[n]] += 1
    n = len(ids)
    cases = f" ({n} cases)" if n > 1 else ""
    if counts.get("failed"):
        res = f"**FAILED** {counts['failed']} of {n}"
    elif counts.get("XPASS"):
        res = "**XPASS** (bug fixed? remove the xfail)"
    elif counts.get("xfail"):
        xf = sorted({c.reasons[i] for i in ids if c.outcomes[i] == "xfail"})
        res = f"**fails**: {counts['xfail']} of {n} known bug(s): " + "; ".join(xf)
        if counts.get("passed"):
            res += f" (the other {counts['passed']} pass)"
    elif counts.get("skipped") == n:
        res = "skipped: " + sorted({c.reasons.get(i, "") for i in ids})[0]
    else:
        res = "pass" + cases
    props = []
    for i in ids:
        for k, v in c.props.get(i, []):
            props.append(f"{k}={v}")
    return res, "; ".join(props)[:400]


def markdown(c: Collector, fuzz_line: str) -> str:
    out = [
        "# Chaos, hostile input and fuzzing: cases and results",
        "",
        "Generated by `.venv/bin/python -m tests.chaos.report docs/chaos.md` from "
        "`tests/chaos/report.py`'s table and a run of the tests it names; do not edit by hand.",
        f"Run: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit "
        f"`{_commit()}`. Every load is bounded in requests and time, all traffic on "
        "127.0.0.1; the expected failed-request count is stated in each test's docstring.",
        "**fails** rows are known bugs kept as strict xfails; the reason says what goes "
        "wrong and where the fix belongs. Measured values come from the tests' "
        "`record_property`.",
        "",
    ]
    section = None
    for row in ROWS:
        if row.section != section:
            section = row.section
            out += ["", f"## {section}", "", "| case | expected | result | measured | test |",
                    "|---|---|---|---|---|"]
        res, props = _result(c, row.test)
        test = row.test.rstrip(":")
        out.append(f"| {row.case} | {row.expected} | {res} | {props} | `{test}` |")
    out += ["", "## Long fuzz run", "", fuzz_line, ""]
    return "\n".join(out) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


FUZZ_LINE = (
    "`.venv/bin/python -m fuzz.http1 --runs 2000000 --seconds 2000` (atheris 3.0, "
    "coverage-guided, both parsers, each input fed whole, cut in three and byte by byte): "
    "see SECURITY.md for the last recorded run."
)


def main(argv: list[str]) -> int:
    only_new = "--only-new" in argv
    args = [a for a in argv if not a.startswith("--")]
    files = sorted({r.test.split("::")[0] for r in ROWS})
    if only_new:
        files = [f for f in files if f.startswith((C, F))]
    c = Collector()
    code = pytest.main([*files, "-q", "-p", "no:cacheprovider"], plugins=[c])
    text = markdown(c, FUZZ_LINE)
    if args:
        Path(args[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return int(code)


if __name__ == "__main__":
    from tests.chaos.report import main as _main  # the importable module's Collector

    sys.exit(_main(sys.argv[1:]))
