"""`xaibench cache`: what the cache holds (info) and removing old results (prune)."""
from __future__ import annotations

import argparse

from xaibench.argtypes import non_negative_float, non_negative_int
from xaibench.errors import XaibenchError


def cmd_cache(args: argparse.Namespace) -> int:
    import datetime
    from pathlib import Path

    from xaibench.cache import cache_info, prune_cache
    from xaibench.io import cache_dir

    root = Path(args.cache or cache_dir())
    if not root.is_dir():
        raise XaibenchError(f"cache folder {root} does not exist")
    if args.action == "info":
        stamp = lambda t: datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"  # noqa: E731
        print(f"cache {root}\n{'kind':<12} {'files':>6} {'MiB':>9}  {'oldest':<16}  newest")
        for row in cache_info(root):
            print(f"{row['kind']:<12} {row['files']:>6} {row['bytes'] / 2**20:>9.1f}  {stamp(row['oldest']):<16}  "
                  f"{stamp(row['newest'])}")
        return 0
    if args.older_than is None and args.keep_latest is None:
        raise XaibenchError("cache prune needs --older-than DAYS and/or --keep-latest N")
    deleted = prune_cache(root, args.older_than, args.keep_latest, dry_run=args.dry_run)
    for path in deleted:
        print(f"  {path}")
    print(f"{'would delete' if args.dry_run else 'deleted'} {len(deleted)} file(s) from {root}")
    return 0


def add_cache(sub) -> None:
    p_cache = sub.add_parser("cache", help="what the cache holds (info), and removing old results (prune)",
                             description="info: files, size, oldest and newest per kind (checkpoints and each unit "
                                         "kind). prune: delete results written more than --older-than DAYS ago "
                                         "and/or all but the --keep-latest N newest of each kind; a unit being "
                                         "computed (its lock held) is left alone. Pruned units are recomputed "
                                         "when a run needs them.")
    p_cache.add_argument("action", choices=["info", "prune"])
    p_cache.add_argument("--cache", help="cache folder (default $XAIBENCH_CACHE, else ~/.cache/xaibench)")
    p_cache.add_argument("--older-than", type=non_negative_float, metavar="DAYS")
    p_cache.add_argument("--keep-latest", type=non_negative_int, metavar="N")
    p_cache.add_argument("--dry-run", action="store_true", help="list what prune would delete, delete nothing")
    p_cache.set_defaults(func=cmd_cache)
