import numpy as np
import pytest
from ase import Atoms

from mlip_exafs.errors import UserError
from mlip_exafs.potentials import calculator_for, load_chgnet_checkpoint, save_chgnet_checkpoint
from mlip_exafs.structures import load_structure


def _symmetric_forces_ok(atoms):
    """Perfect 2H-WS2: W forces vanish by symmetry; S forces only along c, opposite within a layer."""
    forces = atoms.get_forces()
    symbols = np.array(atoms.get_chemical_symbols())
    assert np.abs(forces[symbols == "W"]).max() < 1e-4
    assert np.abs(forces[symbols == "S"][:, :2]).max() < 1e-4
    assert abs(forces[:, 2].sum()) < 1e-4


@pytest.mark.parametrize("name", ["chgnet", "sevennet-0"])
def test_pretrained_models_load_offline_and_respect_symmetry(name):
    atoms = load_structure("ws2")
    atoms.calc = calculator_for(name, atoms, threads=1)
    energy = atoms.get_potential_energy()
    assert np.isfinite(energy) and -9.5 < energy / len(atoms) < -7.0
    _symmetric_forces_ok(atoms)
    assert np.isfinite(atoms.get_stress()).all()
    bcc = load_structure("w-bcc", "2x2x2")
    bcc.calc = calculator_for(name, bcc, threads=1)
    assert np.abs(bcc.get_forces()).max() < 1e-4


def test_unknown_potential_lists_the_available_ones():
    with pytest.raises(UserError, match="chgnet, sevennet-0"):
        calculator_for("mace-mp-0", load_structure("ws2"))


def test_element_not_covered_is_refused_before_compute():
    atoms = Atoms("Og2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[3, 3, 3], pbc=True)
    with pytest.raises(UserError, match="does not cover element.*Og"):
        calculator_for("chgnet", atoms)
    with pytest.raises(UserError, match="does not cover element.*Og"):
        calculator_for("sevennet-0", atoms)


def test_checkpoint_roundtrip_and_refusal(tmp_path):
    import torch
    from chgnet.model import CHGNet

    model = CHGNet.load(use_device="cpu", verbose=False)
    path = tmp_path / "model.pt"
    save_chgnet_checkpoint(model, path, {"note": "test"})
    atoms = load_structure("ws2")
    atoms.calc = calculator_for(path, atoms, threads=1)
    reference = load_structure("ws2")
    reference.calc = calculator_for("chgnet", reference, threads=1)
    assert np.isclose(atoms.get_potential_energy(), reference.get_potential_energy(), atol=1e-5)

    pickled = tmp_path / "evil.pt"
    torch.save({"format": "x", "obj": object()}, pickled)  # not loadable with weights_only=True
    with pytest.raises(UserError, match="refusing checkpoint"):
        load_chgnet_checkpoint(pickled)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="refusing checkpoint"):
        load_chgnet_checkpoint(corrupt)


PAGE_FAULTS_OF_AUTOGRAD_STEPS = """
import resource, sys
import torch
from mlip_exafs.potentials import set_torch_threads
if sys.argv[1] == "tuned":
    set_torch_threads(1)  # applies keep_freed_memory
else:
    torch.set_num_threads(1)
x, w = torch.randn(4000, 64, requires_grad=True), torch.randn(64, 512)
def step():  # forces-and-stress-like: a gradient, then the gradient of a function of it
    g, = torch.autograd.grad((torch.tanh(x @ w) @ w.T).pow(2).sum(), x, create_graph=True)
    g.pow(2).sum().backward()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not __import__("platform").libc_ver()[0] == "glibc", reason="glibc malloc only")
def test_compute_processes_keep_freed_memory_instead_of_faulting_it_in_again():
    """torch frees and reallocates tens of MB per step; by default glibc returns much of it to the kernel."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {mode: int(subprocess.run([sys.executable, "-c", PAGE_FAULTS_OF_AUTOGRAD_STEPS, mode], env=env, capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "tuned")}
    assert faults["tuned"] * 3 < faults["default"], faults
