#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Prints, NUL-separated, the command that runs a systemd service unit's
ExecStart= the way systemd would, as far as that can be done without systemd
as PID 1: the EnvironmentFile= variables expanded with systemd's rules
(${VAR} one word, $VAR split on white space), User=/Group=,
NoNewPrivileges= and CapabilityBoundingSet= applied with setpriv(1).

Usage: unit_argv.py ROOT UNIT      (ROOT: the tree the unit is installed in;
paths in the result are inside ROOT, for `chroot ROOT`)
"""
import os
import re
import shlex
import sys


def read_unit(path):
    """Returns {key: [values]} of the [Service] section, continuations joined."""
    section, out, pending = None, {}, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                section = s.strip("[]")
                continue
            if section == "Service" and "=" in s:
                k, v = s.split("=", 1)
                out.setdefault(k.strip(), []).append(v.strip())
    return out


def read_env(path):
    """systemd EnvironmentFile=: KEY=VALUE lines, # comments, optional quotes."""
    env = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            s = raw.strip()
            if not s or s[0] in "#;" or "=" not in s:
                continue
            k, v = s.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            env[k.strip()] = v
    return env


def expand(words, env):
    argv = []
    for w in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if whole:  # $VAR alone: split into words, nothing when empty
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w))
    return argv


def main():
    root, unit = sys.argv[1], sys.argv[2]
    svc = read_unit(os.path.join(root, unit.lstrip("/")))
    env = {}
    for ef in svc.get("EnvironmentFile", []):
        optional = ef.startswith("-")
        p = os.path.join(root, ef.lstrip("-").lstrip("/"))
        if os.path.exists(p) or not optional:
            env.update(read_env(p))
    exec_start = svc["ExecStart"][-1].lstrip("@-:+!")
    argv = expand(shlex.split(exec_start), env)

    setpriv = ["setpriv"]
    user = svc.get("User", [""])[-1]
    if user and user != "root":
        group = svc.get("Group", [user])[-1]
        setpriv += ["--reuid", user, "--regid", group, "--init-groups"]
    if svc.get("NoNewPrivileges", ["no"])[-1] in ("yes", "true", "1", "on"):
        setpriv.append("--no-new-privs")
    if "CapabilityBoundingSet" in svc:
        caps = " ".join(svc["CapabilityBoundingSet"]).split()
        keep = "".join(",+" + c.lower().removeprefix("cap_") for c in caps)
        setpriv += ["--bounding-set", "-all" + keep, "--inh-caps", "-all"]
    sys.stdout.write("\0".join(setpriv + ["--"] + argv) + "\0")


if __name__ == "__main__":
    main()
