"""Run a command in a container image's root filesystem as a container runtime would.

``python -m tests.deploy.image_enter SPEC`` (SPEC: JSON, see ``tests/image_util.ImageProc``),
started under ``unshare --mount`` so every mount below disappears with the process:

* the image's root, bind-mounted read-only (the chart's ``readOnlyRootFilesystem``);
* ``/proc``, the host's ``/dev``, a fresh tmpfs on ``/tmp`` (the chart's emptyDir);
* host directories bound where the spec says (``/data``, the chart's data volume);
* then ``chroot``, ``chdir`` to the image's working directory, drop to the image's
  uid/gid with no supplementary groups, and ``exec`` the command with the image's
  environment.  The network is the host's: servers inside listen on its loopback.

Only the standard library: this runs as root before the chroot, and nothing of the
checkout is imported after it.  Used where no OCI runtime may run (here, runc/crun
cannot set RLIMIT_NPROC in the sandbox).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def enter(spec: dict[str, object]) -> None:
    root = str(spec["root"])
    _mount("--bind", root, root)
    _mount("-o", "remount,bind,ro", root)
    _mount("-t", "proc", "proc", f"{root}/proc")
    _mount("--rbind", "/dev", f"{root}/dev")
    _mount("-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs", f"{root}/tmp")
    binds = spec.get("binds", {})
    assert isinstance(binds, dict)
    for target, source in binds.items():
        _mount("--bind", str(source), f"{root}{target}")
    os.chroot(root)
    os.chdir(str(spec["workdir"]))
    os.setgroups([])
    os.setgid(int(str(spec["gid"])))
    os.setuid(int(str(spec["uid"])))
    argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
    env = {str(k): str(v) for k, v in spec["env"].items()}  # type: ignore[attr-defined]
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    enter(json.loads(sys.argv[1]))
