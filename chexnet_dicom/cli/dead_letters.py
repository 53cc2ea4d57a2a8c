"""``chexdcm dead-letters list|resend|purge [ID ...]``: deliveries that used up their attempts.

``list`` shows each dead letter (id, attempts, last error, files); ``resend`` puts them
(all, or the ids given) back in the queue with a fresh attempt count, and a running node
sends them at once; ``purge`` deletes them and their results folders.
"""

from __future__ import annotations

import argparse
import json
import time

from chexnet_dicom.errors import EXIT_OK

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``dead-letters`` subcommand."""
    from chexnet_dicom.cli.listen import add_spool_options

    p = sub.add_parser("dead-letters", help="list, re-send or purge the node's undeliverable results")
    p.add_argument(
        "action",
        choices=("list", "resend", "purge"),
        help="list the dead letters, queue them for delivery again, or delete them",
    )
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids (default: all)")
    add_spool_options(p)
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List, re-send or purge dead letters."""
    import shutil

    from chexnet_dicom.cli.listen import spool_of
    from chexnet_dicom.node.ledger import NodeLedger

    root = spool_of(args)
    ledger = NodeLedger(root / "ledger.sqlite")
    try:
        if args.action == "list":
            rows = [
                {
                    "id": r["id"],
                    "attempts": r["attempts"],
                    "files": r["files"],
                    "destination": r["destination"],
                    "last_error": r["last_error"],
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["created"])),
                }
                for r in ledger.deliveries("dead")
                if not args.ids or r["id"] in args.ids
            ]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    print(
                        f"{r['id']}\t{r['attempts']} attempts\t{r['files']} files\t{r['destination']}\t{r['last_error']}"
                    )
                print(f"{len(rows)} dead letter(s)")
        elif args.action == "resend":
            n = ledger.resend(args.ids or None)
            print(f"{n} dead letter(s) queued again")
        else:
            folders = ledger.purge_dead(args.ids or None)
            for folder in folders:
                path = (root / folder).resolve()
                if root.resolve() in path.parents:
                    shutil.rmtree(path, ignore_errors=True)
            print(f"{len(folders)} dead letter(s) purged")
    finally:
        ledger.close()
    return EXIT_OK
