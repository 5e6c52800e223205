"""minift: an educational, from-scratch PyTorch library for fine-tuning LLMs.

The top-level folder ``kernels/`` is installed as the subpackage ``minift.kernels``:
another PyPI project already owns the import name ``kernels``.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["minift", "minift.*"]) + ["minift.kernels"]

setup(
    name="minift",
    version="0.1.0",
    description="Fine-tuning LLMs from scratch: readable modules, reference tests, lessons, Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"minift.kernels": "kernels"},
    # the shipped tokenizer and base model (minift/shipped.py checks their hashes)
    package_data={"minift": ["assets/*.json", "assets/*/*.json", "assets/*/*.safetensors"]},
    install_requires=[
        "torch>=2.4",
        "numpy",
        "tiktoken>=0.7",
        "triton; platform_system == 'Linux'",
        "matplotlib",
        "safetensors",
        "tqdm",
    ],
    extras_require={
        "dev": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "ruff",
            "transformers",
            "peft",
            "jupytext",
            "scikit-learn",  # tests only: the reference for minift.metrics
            "sacrebleu",  # tests only: the reference for BLEU and chrF
            "rouge-score",  # tests only: the reference for ROUGE
            "imbalanced-learn",  # tests only: the reference for SMOTE
            "fairlearn",  # tests only: the reference for minift.fairness
            "statsmodels",  # tests only: the reference for Fleiss' kappa
            "krippendorff",  # tests only: the reference for Krippendorff's alpha
            "scipy",  # tests only: the reference for Spearman's rho and Kendall's tau-b (minift.rating)
        ],
    },
    entry_points={"console_scripts": ["minift=minift.cli:main"]},
)
