"""jepa: joint-embedding predictive architectures in JAX/Flax (NNX)."""
import setuptools

# Lower bounds are the versions this code is tested with on Python 3.11 (where pip resolves jax 0.10.x);
# no upper bounds, so newer Pythons pick up newer jax/flax.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "ml-collections>=1.1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "pillow>=10.0",
    "scikit-learn>=1.4",  # ships the embedded default dataset (8x8 digits)
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
]

setuptools.setup(
    name="jepa",
    version="0.1.0",
    description="Joint-embedding predictive architectures (I-JEPA, V-JEPA, IWM, LeJEPA) in JAX/Flax NNX",
    packages=setuptools.find_packages(include=["jepa", "jepa.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # The tests run everything they have: video decoding (PyAV), the PyTorch parity checks (torch) and
        # ahead-of-time compilation for TPU (libtpu).
        # torch is pinned because an open range pulls a multi-GB CUDA build; 2.13.0's CPU build is what these
        # machines carry. jepa itself never needs torch (jepa.convert reads .pth files without it).
        # libtpu (through jax[tpu], pinned to the jax it matches) lets tests/test_aot.py compile for TPU
        # topologies on a CPU machine; it has wheels for Linux x86-64 only. ruff is the linter
        # tests/test_style.py runs (ruff.toml), pinned so that a new rule cannot fail a fresh machine's CI.
        # pytest-xdist runs the suite on two workers (README's test command: -n 2), which overlaps one test's
        # single-threaded compilation with another's run on 2 cores.
        "test": ["pytest>=8.0", "pytest-xdist==3.8.0", "av>=12.0", "torch==2.13.0", "ruff==0.17.6",
                 "jax[tpu]==0.10.2; sys_platform == 'linux' and platform_machine == 'x86_64'"],
        # experiments/aot.py: ahead-of-time compilation for TPU topologies (memory, FLOPs) on any Linux machine.
        "tpu": ["jax[tpu]==0.10.2"],
        "video": ["av>=12.0"],
        "torch": ["torch==2.13.0"],
    },
)
