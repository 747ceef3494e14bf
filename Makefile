# The kit's commands. `make demo` and `make test` do all the set-up they need on a fresh machine.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: setup system-packages release solutions test test-all demo mutants calibrate bench clean

setup: $(STAMP) system-packages

$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	@rm -f .venv/.installed-* && touch $@

# bubblewrap is the sandbox; chromium renders the feedback pages in the tests. Both are optional
# at run time (the grader falls back and says so), so a failed install does not stop set-up.
system-packages:
	@missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null) \
	    || echo "could not install$$missing; the grader will report its fallback"; \
	fi

# --- Notebooks --------------------------------------------------------------------------------
# Every assignment is a folder source/<assignment>/ holding its notebook(s).
ASSIGNMENTS := $(sort $(patsubst source/%/,%,$(dir $(wildcard source/*/*.ipynb))))

# The student versions, release/<assignment>/: nbgrader replaces each solution by its stub, locks
# the given cells and records their checksums. --no-db: releasing never touches a gradebook.
release: $(STAMP)
	@for a in $(ASSIGNMENTS); do \
	  echo "nbgrader generate_assignment $$a -> release/$$a/"; \
	  .venv/bin/nbgrader generate_assignment "$$a" --force --no-db --log-level=WARN || exit 1; \
	done

# The answer key as TAs read it, solutions/<assignment>/: every source notebook run top to bottom
# with nbclient, on the CPU, in a fresh kernel of this .venv, with its outputs and figures.
solutions: $(STAMP)
	@ASSIGNMENTS="$(ASSIGNMENTS)" $(PY) -c "$$RUN_SOLUTIONS"

define RUN_SOLUTIONS
import json, os, sys, tempfile, time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

# A kernel spec that runs this very interpreter, whatever other kernels are installed.
specs = tempfile.TemporaryDirectory()
spec = Path(specs.name, "python3")
spec.mkdir()
spec.joinpath("kernel.json").write_text(json.dumps({
    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": "Python 3 (ipykernel)", "language": "python"}))
env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
           MPLBACKEND="module://matplotlib_inline.backend_inline")
for source in sorted(Path("source").glob("*/*.ipynb")):
    if source.parent.name not in os.environ["ASSIGNMENTS"].split():
        continue
    out = Path("solutions", source.parent.name, source.name)
    nb = nbformat.read(source, as_version=4)
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs.name]))
    start = time.perf_counter()
    client = NotebookClient(nb, km=km, timeout=900,
                            resources={"metadata": {"path": str(source.parent)}})
    client.execute(env=env, cleanup_kc=True)  # cleanup_kc: shut the kernel down afterwards
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"{source} -> {out}: executed in {time.perf_counter() - start:.1f} s")
specs.cleanup()
endef
export RUN_SOLUTIONS

# Part 2's pretrained language model, source/ppo_lm/tiny_lm.pt (commit it): the model and the
# corpus come from the notebook's own cells; fixed seed, one CPU thread, about two minutes.
.PHONY: pretrain
pretrain: $(STAMP)
	nice $(PY) tools/pretrain_lm.py

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15 -m "not slow"

# Everything, the slow tests too (tests marked `slow`: minutes of grading, e.g. hint precision).
test-all: setup
	$(PY) -m pytest tests -q -p no:cacheprovider --durations=15

# --- The cohort tools ---------------------------------------------------------------------------
# A demo cohort (correct, blank, common mistakes, a broken file) graded end to end in
# build/demo-course/: results, gradebook, feedback, report, `nbgrader export`; prints the table.
demo: setup
	$(PY) -m autograder.course.demo

# grade-course --jobs 2 against nbgrader autograde on 100 synthetic submissions, and one cold
# submission each; writes the numbers into README.md's "## Performance" section.
bench: setup
	nice $(PY) bench/run_bench.py --n 100 --jobs 2 --readme README.md

# --- The grader's own checks (hidden suites) ------------------------------------------------
# Every mutant of autograder/suites/<assignment>/mutants.py graded: the table of points lost and hints
# shown, the kill rate and the false-fail count of the correct variants.
mutants: setup
	nice $(PY) -m autograder.suites.ppo.corpus
	nice $(PY) -m autograder.suites.ppo_lm.corpus

# The training tests' pass marks, from the answer key over 200 hidden seeds; writes
# autograder/suites/ppo/thresholds.json and docs/calibration.md (about 15 minutes). Then Part 2's
# (ppo_lm: 100 seeds of RLHF training, about an hour on two busy cores; --resume reuses the runs
# logged in build/ that match the current code, so an interrupted run continues).
calibrate: setup
	nice $(PY) -m autograder.calibrate --seeds 200
	nice $(PY) -m autograder.calibrate --assignment ppo_lm --seeds 100 --resume

clean:
	rm -rf build
