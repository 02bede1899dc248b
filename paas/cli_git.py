"""`paas keys` and `paas git-remote`: the SSH keys allowed to `git push`, and the
remote to push to. Registered into paas.cli's parser by `register(sub, add)`."""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from rich.table import Table

from paas import localcluster

_APP = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
MAX_KEY_FILE = 16 * 1024


def _cli():
    from paas import cli  # late: paas.cli imports this module
    return cli


def cmd_keys_add(args: argparse.Namespace) -> int:
    cli = _cli()
    path = Path(args.path).expanduser()
    try:
        if path.stat().st_size > MAX_KEY_FILE:
            cli.err.print(f"[red]error:[/] {path} is over 16 KiB; a public key file is one line")
            return 1
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        cli.err.print(f"[red]error:[/] cannot read {path}: {e}", highlight=False)
        return 1
    key = cli._client().add_key(text, args.name)
    cli.out.print(f"[green]added key {key['name']}[/] ({key['type']} {key['fingerprint']}): "
                  "it may `git push` now", highlight=False)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    cli = _cli()
    rows = cli._client().keys()
    if args.json:
        cli._print_json(rows)
        return 0
    table = Table("NAME", "TYPE", "FINGERPRINT", "ADDED")
    for k in rows:
        table.add_row(k["name"], k.get("type", ""), k["fingerprint"],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["added"])))
    cli.out.print(table)
    if not rows:
        cli.err.print("no keys yet: paas keys add ~/.ssh/id_ed25519.pub")
    return 0


def cmd_keys_remove(args: argparse.Namespace) -> int:
    cli = _cli()
    key = cli._client().remove_key(args.name)
    cli.out.print(f"[green]removed key {key['name']}[/] ({key['fingerprint']})", highlight=False)
    return 0


def cmd_git_remote(args: argparse.Namespace) -> int:
    cli = _cli()
    if not _APP.match(args.app):
        cli.err.print(f"[red]error:[/] {args.app!r} is not an app name (1-40 of a-z, 0-9 and '-', "
                      "starting with a letter)", highlight=False)
        return 1
    home = localcluster.paas_home()
    config = localcluster.load_config(home) or localcluster.ClusterConfig.from_env()
    print(f"git remote add paas ssh://git@127.0.0.1:{config.git_port}/{args.app}")
    return 0


def register(sub, add) -> None:
    """Add `keys` (list; `add PATH [--name N]`; `remove NAME`) and `git-remote APP`."""
    sp = add("keys", cmd_keys, "the SSH public keys allowed to `git push` apps: list them, or "
             "`paas keys add PATH [--name NAME]`, `paas keys remove NAME`")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    verbs = sp.add_subparsers(dest="keys_command", metavar="[add|remove]")
    p = verbs.add_parser("add", help="allow a public key (e.g. ~/.ssh/id_ed25519.pub) to push",
                         description="allow a public key to push; its name defaults to the key's comment")
    p.add_argument("path", help="public key file, one OpenSSH line")
    p.add_argument("--name", help="what to call the key (default: its comment)")
    p.set_defaults(fn=cmd_keys_add)
    p = verbs.add_parser("remove", help="stop a key from pushing", description="stop a key from pushing")
    p.add_argument("name", help="the key's name (or fingerprint), as `paas keys` lists it")
    p.set_defaults(fn=cmd_keys_remove)
    add("git-remote", cmd_git_remote, "print the `git remote add` command for pushing an app: then "
        "`git push paas main` builds and deploys it").add_argument("app")
