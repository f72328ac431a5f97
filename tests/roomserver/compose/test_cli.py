"""``mixer-ext compose`` (issue 23.4): one composition job, as a Kubernetes Job would run it,
in its own process: the job's JSON (``spec.encode_job``) with media keys under the storage
root, progress and the result as JSON lines, the mix checked by FFT, its levels beside it;
a bad job is one line and exit 2, a missing recording exit 1 with the reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from mixer_ext.roomserver.compose.spec import decode_job, encode_job, plan
from mixer_ext.testing.net import ROOT, mixer_ext_cmd
from mixer_ext.testing.timeline import decode_timeline, tone_level
from tests.support.compose import record

pytestmark = pytest.mark.slow


def run(args: list[str], root: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mixer_ext_cmd(), "compose", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "MIXER_RECORDINGS_DIR": str(root)},
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    d = root / "recordings" / "RM1"
    d.mkdir(parents=True)
    record(d / "RTalice", 440, 0.0, [(0.0, 2.0)])
    record(d / "RTbob", 1000, 1.0, [(0.0, 2.0)])
    for f in d.iterdir():
        f.rename(f.with_suffix(".mka"))
    return root


def test_compose_runs_a_job_from_the_storage(storage: Path, tmp_path: Path) -> None:
    from mixer_ext.roomserver.compose.spec import Source
    from tests.support.compose import RATE

    sources = [
        Source("alice", storage / "recordings/RM1/RTalice.mka", 0, 2 * RATE),
        Source("bob", storage / "recordings/RM1/RTbob.mka", RATE, 2 * RATE),
    ]
    job = plan(sources, storage / "compositions/CJ1.webm", fmt="webm", trim=False)
    text = encode_job(job, storage)
    assert str(storage) not in text  # keys, not this machine's paths
    assert decode_job(text, Path("/elsewhere")).output == Path("/elsewhere/compositions/CJ1.webm")
    (tmp_path / "job.json").write_text(text)

    done = run(["--job", str(tmp_path / "job.json")], storage)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    progress = [x["progress"] for x in lines if "progress" in x]
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    result = lines[-1]["done"]
    assert abs(result["duration"] - 3.0) < 0.01
    assert result["levels"] == "compositions/CJ1-levels.json"
    assert json.loads((storage / result["levels"]).read_text())["payloads"]
    pcm = decode_timeline(storage / "compositions/CJ1.webm", keep_start=True)
    assert tone_level(pcm, 440, 0.2, 0.8) > 0.2 and tone_level(pcm, 1000, 0.2, 0.8) < 0.01
    assert tone_level(pcm, 1000, 2.2, 2.8) > 0.2 and tone_level(pcm, 440, 2.2, 2.8) < 0.01

    # the same job on stdin, one recording gone: exit 1 with the reason
    gone = storage / "recordings/RM1/RTbob.mka"
    kept = gone.read_bytes()
    gone.unlink()
    try:
        failed = run(["--job", "-"], storage, stdin=text.replace("CJ1", "CJ2"))
    finally:
        gone.write_bytes(kept)
    assert failed.returncode == 1
    assert "RTbob.mka" in json.loads(failed.stdout.splitlines()[-1])["failed"]
    assert not (storage / "compositions/CJ2.webm").exists()


@pytest.mark.parametrize(
    ("job", "says"),
    [
        ("{not json", "not a composition job"),
        (json.dumps({"sources": []}), "not a composition job"),
        (
            json.dumps(
                {
                    "sources": [{"name": "a", "key": "../etc/passwd", "offset": 0, "duration": 1}],
                    "output": "compositions/CJ1.mp4",
                    "format": "mp4",
                    "segments": [[0, 1]],
                }
            ),
            "not a media key",
        ),
    ],
)
def test_a_bad_job_is_one_line_and_exit_2(storage: Path, job: str, says: str) -> None:
    bad = run(["--job", "-"], storage, stdin=job)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixer-ext compose: --job:"), bad.stderr
    assert says in lines[0]
