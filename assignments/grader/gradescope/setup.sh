#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu; choose a base image
# with Python >= 3.11, e.g. Ubuntu 24.04: the pinned numpy/scipy need it). It installs the pinned
# grading requirements into a venv (the ntrk_minimal library, the reference the tests compare with, is in
# this zip and found through PYTHONPATH).
set -euo pipefail
SRC=/autograder/source
apt-get install -y python3 python3-venv python3-pip
python3 -m venv /autograder/venv
PIP=/autograder/venv/bin/pip
$PIP install --upgrade pip
# torch: the CPU wheel (the default Linux wheel on PyPI pulls CUDA libraries the grader never uses)
$PIP install --index-url https://download.pytorch.org/whl/cpu "$(grep '^torch==' $SRC/requirements.txt)"
$PIP install -r $SRC/requirements.txt
