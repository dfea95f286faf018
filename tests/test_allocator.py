"""The glibc allocator tuning: it must cut the page faults of a real training step, and be switchable off."""

import os
import subprocess
import sys

import pytest

from peterrec.allocator import tune_cpu_allocator

# Three backward passes of a C=128 NextItNet; prints the minor page faults they caused.
STEP_FAULTS = """
import resource, sys, torch
from peterrec.allocator import tune_cpu_allocator
print(tune_cpu_allocator(), file=sys.stderr)
from peterrec.model.backbone import NextItNet
from peterrec.model.item_encoder import ItemOutput
from peterrec.training.objectives import full_softmax_loss
torch.manual_seed(0)
model, output = NextItNet(1000, 128), ItemOutput(1000, 128)
seqs = torch.randint(4, 1004, (32, 51))
def step():
    full_softmax_loss(output, model(seqs[:, :-1]), seqs[:, 1:]).backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _step_faults(default_malloc: bool) -> tuple[int, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PETERREC_DEFAULT_MALLOC="1" if default_malloc else "0")
    done = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    return int(done.stdout.strip().splitlines()[-1]), done.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_tuning_cuts_the_page_faults_of_a_training_step():
    default_faults, default_applied = _step_faults(default_malloc=True)
    tuned_faults, tuned_applied = _step_faults(default_malloc=False)
    assert (default_applied, tuned_applied) == ("False", "True")
    # Typically ~23,000 faults by default and a few hundred tuned. glibc's own dynamic mmap threshold
    # sometimes settles early in the default run too (seen at ~1,000 under a loaded machine, with the tuned
    # run then at about the same), so the bound is on the tuned run; the 3x cut is checked where the default
    # run shows the problem it fixes.
    assert tuned_faults < 3000, (tuned_faults, default_faults)
    if default_faults > 5000:
        assert tuned_faults < default_faults / 3, (tuned_faults, default_faults)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("PETERREC_DEFAULT_MALLOC", "1")
    assert tune_cpu_allocator() is False
