# Two commands matter: `make demo` (set up + main job) and `make test` (set up + all tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TQDM_DISABLE := 1
export PYTHONHASHSEED := 0

.PHONY: setup demo bench-full test test-lib test-nb lab notebooks clean

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

## main job (<= 10 minutes on 2 cores; 509 s measured at load 3-4): a reduced run of the headline (7 methods incl. the 100-NFE
## baselines, 5-point fronts, 24 samples, 3 evaluation seeds; results/headline_quick.*, not committed)
## printed beside the committed full run's verdicts
demo: $(STAMP)
	$(PY) -m ntrk_minimal.studies.headline --helper --quick > /dev/null & \
	$(PY) -m ntrk_minimal.bench --task trained --quick; status=$$?; wait; exit $$status

## the full headline (committed results/headline.{json,md,png}): 6 methods (trained.FULL_METHODS; SMC-20 at 500 NFEs),
## 8-point fronts (6 for SMC-20 and best-of-N), 32 samples, 2 tuning + 5 evaluation seeds; its wall time is
## in results/headline.json (wall_time_s: 35 minutes on our shared 2-core machine at load 4-7). Two processes (one
## thread each) share the points through build/headline_points.jsonl, which also makes the run
## resumable: an interrupted run continues where it stopped.
bench-full: $(STAMP)
	mkdir -p build
	nice -n 5 $(PY) -m ntrk_minimal.studies.headline --helper > build/headline_helper.log 2>&1 & \
	nice -n 5 $(PY) -m ntrk_minimal.bench --task trained; status=$$?; wait; exit $$status

## all tests: pytest over ntrk_minimal, then nbval over every notebook
test: $(STAMP)
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks

test-lib: $(STAMP)
	$(PY) -m pytest -q tests

test-nb: $(STAMP)
	$(PY) -m pytest -q --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks

## regenerate every notebook from its jupytext source notebooks/NAME.py and execute it in place
## (stores outputs; run after changing a notebook's .py)
notebooks: $(STAMP)
	$(PY) scripts/execute_notebooks.py $(filter-out notebooks/conftest.py,$(wildcard notebooks/*.py))

lab: $(STAMP)
	TQDM_DISABLE=0 $(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(VENV) results/*.tmp

## course assignments: student notebooks, ntrk_student.py and public tests generated from the solutions
## (checked by tests/test_assignments.py); teachers' guide: assignments/README.md
.PHONY: assignments gradescope grade grade-sample
assignments: $(STAMP)
	$(PY) scripts/make_assignments.py

## Gradescope autograder zips, one per sheet, built offline: assignments/dist/ntrk_sheetN_autograder.zip
gradescope: $(STAMP)
	$(PY) assignments/grader/gradescope/build.py

## grade a folder of submissions: make grade SUBMISSIONS=path/to/folder [SHEET="1 2"] [JOBS=2]
## -> assignments/dist/grades/grades.{csv,md} and one Gradescope-format results/<name>.json each
SUBMISSIONS ?=
JOBS ?= 1
grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || (echo "usage: make grade SUBMISSIONS=folder [SHEET='1 2'] [JOBS=2]"; exit 2)
	$(PY) assignments/grader/grade.py "$(SUBMISSIONS)" --out assignments/dist/grades --jobs $(JOBS) $(if $(SHEET),--sheet $(SHEET))

## the teachers' guide's sample score table: grade the planted submissions, render into assignments/README.md
grade-sample: $(STAMP)
	$(PY) assignments/grader/sample_table.py
