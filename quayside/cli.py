"""`quayside` command line: look at and query the lake, generate demo data."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from quayside.lake import Lake
from quayside.maintenance import DEFAULTS, MIB


def _print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(v.rjust(w) if n and v.replace(",", "").isdigit() else v.ljust(w) for v, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def cmd_tables(args: argparse.Namespace) -> int:
    tables = Lake().tables()
    if args.json:
        print(json.dumps([t.as_dict() for t in tables], indent=2))
        return 0
    _print_table(["zone", "namespace", "name", "rows", "updated_at"],
                 [[t.zone, t.namespace, t.name, f"{t.rows:,}",
                   t.updated_at.strftime("%Y-%m-%d %H:%M:%S") if t.updated_at else ""] for t in tables])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    con = Lake().connect()
    try:
        result = con.sql(args.query)
    except Exception as exc:  # duckdb raises many error types; the user wants the message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is None:
        return 0
    rows = result.fetchmany(args.limit + 1)
    if args.json:
        print(json.dumps([dict(zip(result.columns, r)) for r in rows[: args.limit]], default=str, indent=2))
    else:
        _print_table(result.columns, [list(r) for r in rows[: args.limit]])
        if len(rows) > args.limit:
            print(f"... (first {args.limit} rows; use --limit)")
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from quayside.maintenance import MaintenanceSettings, maintain_table, maintained_tables, parse_table_name

    settings = MaintenanceSettings.from_units(args.target_file_mb, args.min_files, args.retention_days,
                                              args.keep_snapshots, args.orphan_age_days, args.dry_run)
    lake = Lake()
    tables = [parse_table_name(args.table)] if args.table else maintained_tables(lake)
    results, failed = [], 0
    for namespace, name in tables:
        try:
            results.append(maintain_table(lake, namespace, name, settings))
        except Exception as exc:  # report every table's outcome, then fail
            print(f"error: {namespace}.{name}: {exc}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps([vars(r) for r in results], indent=2))
    else:
        _print_table(["table", "files before", "files after", "compacted", "snapshots expired", "orphans removed",
                      "seconds"],
                     [[r.table, r.data_files_before, r.data_files_after, r.files_compacted, r.snapshots_expired,
                       r.orphan_files_removed, f"{r.seconds:.1f}"] for r in results])
        if args.dry_run:
            print("dry run: nothing was changed")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from quayside.demo import generate

    started = time.perf_counter()
    summary = generate(Lake(), scale=args.scale, seed=args.seed, days=args.days, end=date.fromisoformat(args.end))
    print(f"demo data: {summary.total_files} files written to landing in {time.perf_counter() - started:.1f}s")
    _print_table(["dataset", "files", "rows delivered", "rows expected in staged"],
                 [[key, str(len(files)), f"{summary.rows.get(key, 0):,}", f"{summary.current_rows.get(key, 0):,}"]
                  for key, files in summary.files.items()])
    print(f"{len(summary.bad_files)} deliberately bad or awkward files:")
    for bad in summary.bad_files:
        print(f"  {bad.key}: {bad.problem} -> {bad.expected}")
    return 0


def cmd_dbt_sources(args: argparse.Namespace) -> int:
    from quayside.dbt_sources import SOURCES_FILE, render_sources
    from quayside.specs import load_specs

    SOURCES_FILE.write_text(render_sources(load_specs(Path(args.datasets))))
    print(f"wrote {SOURCES_FILE}")
    return 0


def cmd_serve_ingest(args: argparse.Namespace) -> int:
    from quayside.push import make_server
    from quayside.specs import load_specs

    specs = load_specs(Path(args.datasets))
    server = make_server(Lake(), specs, args.host, args.port, args.max_bytes)
    print(f"accepting signed uploads for {len(specs)} dataset(s) on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    from quayside.access import AccessError, AccessSettings, generate, write_folder
    from quayside.specs import load_specs

    try:
        settings = AccessSettings.from_env(
            bucket=args.bucket, account_id=args.account_id, region=args.region, catalog_id=args.catalog_id,
            analyst_workgroup=args.workgroup, platform_workgroup=args.platform_workgroup, prefix=args.prefix)
        document = generate(load_specs(Path(args.datasets)), settings)
    except AccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        for path in write_folder(document, Path(args.out)):
            print(f"wrote {path}")
    else:
        print(json.dumps(document, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quayside", description="Quayside data lake")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tables", help="list every table in the lake")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_tables)
    p = sub.add_parser("sql", help="run DuckDB SQL over the lake; tables are <namespace>.<table>")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("maintain", help="compact small files, expire old snapshots, remove orphan files")
    p.add_argument("table", nargs="?", help="namespace.name (default: every raw, staged and quarantine table)")
    p.add_argument("--target-file-mb", type=float, default=DEFAULTS.target_file_size_bytes / MIB)
    p.add_argument("--min-files", type=int, default=DEFAULTS.min_files_to_compact,
                   help="compact a partition from this many small files")
    p.add_argument("--retention-days", type=float, default=DEFAULTS.snapshot_retention.total_seconds() / 86400,
                   help="expire snapshots older than this")
    p.add_argument("--keep-snapshots", type=int, default=DEFAULTS.keep_last_snapshots,
                   help="always keep this many newest snapshots")
    p.add_argument("--orphan-age-days", type=float, default=DEFAULTS.orphan_min_age.total_seconds() / 86400,
                   help="remove unreferenced files older than this")
    p.add_argument("--dry-run", action="store_true", help="report what would be done; change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_maintain)
    p = sub.add_parser("demo", help="write the demo tenant's source files into landing")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--end", default=(date.today() - timedelta(days=1)).isoformat(), help="last day (default yesterday)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("serve-ingest", help="accept signed file uploads into landing (the push path)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-bytes", type=int, default=1 << 30)
    p.add_argument("--datasets", default=str(Path(__file__).resolve().parent.parent / "lake_assets" / "datasets"))
    p.set_defaults(func=cmd_serve_ingest)
    p = sub.add_parser("dbt-sources", help="regenerate the dbt sources from the dataset specs")
    p.add_argument("--datasets", default=str(Path(__file__).resolve().parent.parent / "lake_assets" / "datasets"))
    p.set_defaults(func=cmd_dbt_sources)
    p = sub.add_parser("access", help="IAM policies and Lake Formation grants generated from the dataset specs")
    p.add_argument("--bucket", help="the lake's bucket (default QUAYSIDE_BUCKET)")
    p.add_argument("--account-id", help="AWS account of the roles and Athena (default AWS_ACCOUNT_ID)")
    p.add_argument("--region", help="region of Glue and Athena (default AWS_REGION, else eu-west-2)")
    p.add_argument("--catalog-id", help="account of the Glue Data Catalog (default QUAYSIDE_GLUE_CATALOG_ID, "
                                        "else the account id)")
    p.add_argument("--workgroup", help="analysts' Athena workgroup; '{domain}' is replaced by the domain "
                                       "(default QUAYSIDE_ATHENA_WORKGROUP, else primary)")
    p.add_argument("--platform-workgroup", help="table maintenance's workgroup (default QUAYSIDE_ATHENA_WORKGROUP, "
                                                "else primary)")
    p.add_argument("--prefix", help="of role and policy names (default quayside)")
    p.add_argument("--out", help="write iam/<policy>.json, principals.json and lakeformation.json here "
                                 "instead of printing one JSON document")
    p.add_argument("--datasets", default=str(Path(__file__).resolve().parent.parent / "lake_assets" / "datasets"))
    p.set_defaults(func=cmd_access)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
