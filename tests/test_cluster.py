"""hashsearch.cluster: a local Ray instance started on demand, and cleaned up at exit."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")


@pytest.mark.slow
def test_a_local_instance_leaves_no_session_folder_behind():
    script = ("from hashsearch.cluster import connect; "
              "print(connect(num_cpus=1).cluster_resources()['CPU'])")
    env_tmp = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TMPDIR": str(env_tmp)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "1.0"
        assert not list(env_tmp.glob("hashsearch-ray-*")), "the local Ray session folder was left behind"
    finally:
        shutil.rmtree(env_tmp, ignore_errors=True)
