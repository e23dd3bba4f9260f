"""The rubric: every exercise, its points, what each point is for, its hint and its time. One table.

Everything reads this file and nothing else for points or hints:

- ``scripts/make_assignments.py`` takes each stub's hint and expected minutes from it (a marked
  solution region without an entry here, or an entry without its region, stops the generator);
- the grader (``conftest.py`` + ``scoring.py``) turns the outcome of each criterion's test into points;
- the batch grader (``grade.py``), the Gradescope autograder (``gradescope/run_autograder``) and the
  teachers' guide (``assignments/README.md``, its tables are rendered from here) show the same numbers.

A criterion is one test function (in ``public/``: shipped to students, shown at once on Gradescope;
or in ``hidden/``: instructor-only, shown after the due date). A parametrized test spreads its points
evenly over its cases, so a solution that handles 3 of 6 cases gets half the criterion's points.
Change points here, then run ``make assignments`` (the student copy of this file is regenerated) and
``make gradescope`` (the autograder zips carry it).
"""
from __future__ import annotations

from dataclasses import dataclass

# Gradescope visibility of the hidden criteria ("hidden", "after_due_date", "after_published",
# "visible"); public criteria are always "visible".
HIDDEN_VISIBILITY = "after_due_date"

KERNELS, WHITENING = "ntrk_minimal/kernels.py", "ntrk_minimal/whitening.py"
METRICS, PROTOCOL = "ntrk_minimal/metrics.py", "ntrk_minimal/bench/stats.py"


@dataclass(frozen=True)
class Criterion:
    test: str                # the test function (public/ or hidden/), without parameters
    points: float
    what: str                # what the points are for: the rubric line an instructor reads
    hidden: bool = True


@dataclass(frozen=True)
class Exercise:
    id: str                  # "E1.2"
    name: str                # the function or method the student writes ("ddim_mean", "Base.step")
    sheet: int
    source: str              # where its marked solution lives: a library module or a solution notebook
    minutes: int
    hint: str | tuple[str, ...]   # the stub's text (one per marked region); points to the equation
    criteria: tuple[Criterion, ...]

    @property
    def points(self) -> float:
        return sum(c.points for c in self.criteria)

    @property
    def in_notebook(self) -> bool:
        return self.source.endswith(".ipynb")

    @property
    def key(self) -> str:    # "E1_2": the prefix of its test names
        return self.id.replace(".", "_")


SHEETS = {
    1: ("Reverse kernels", "ex_01_reverse_kernels.ipynb"),
    2: ("Whitening", "ex_02_whitening.ipynb"),
    3: ("Measuring honestly", "ex_03_measuring_honestly.ipynb"),
}

EX01 = "notebooks/" + SHEETS[1][1]
EX02 = "notebooks/" + SHEETS[2][1]
EX03 = "notebooks/" + SHEETS[3][1]

C = Criterion
EXERCISES: tuple[Exercise, ...] = (
    # ---- sheet 1: reverse kernels (50 points) ------------------------------------------------------
    Exercise("E1.1", "tweedie", 1, KERNELS, 10,
             "tweedie: solve the forward process x_t = a_t x_0 + s_t eps (notebook section 1) for x_0, "
             "with eps replaced by eps_hat. It must hold on any path (VP, flow or neither): use the a_t "
             "and s_t you are given (Python floats). Keep x_t's shape and dtype.",
             (C("test_E1_1_tweedie_vp", 2, "inverts x_t = a_t x_0 + s_t eps on a VP point", hidden=False),
              C("test_E1_1_tweedie_any_path", 2,
                "inverts it on flow points and on a path that is neither (3 shapes, float64/float32)"),
              C("test_E1_1_tweedie_keeps_dtype_and_input", 1, "keeps float32, does not modify x_t"))),
    Exercise("E1.2", "ddim_mean", 1, KERNELS, 15,
             "ddim_mean: the DDIM mean mu_t of the notebook's section 1 (DDIM eq. 12 written for "
             "x_t = a_t x_0 + s_t eps): the forward process at (a_prev, s_prev) with x0_hat as x_0, where "
             "the part sigma_t^2 of the noise variance s_prev^2 is left to the fresh noise. The factor of "
             "eps_hat is a standard deviation. Rounding can make the quantity under its root about -1e-12 "
             "at the last step: that must not break it.",
             (C("test_E1_2_ddim_mean_deterministic_vp", 2,
                "sigma_t = 0 lands on the forward point (VP)", hidden=False),
              C("test_E1_2_ddim_mean_deterministic_flow", 1, "sigma_t = 0 lands on the forward point (flow)"),
              C("test_E1_2_ddim_mean_posterior_mean", 4,
                "at the DDPM posterior variance, equals the posterior mean of q(x_prev | x_t, x_0) "
                "(3 VP steps, 3 flow steps)"),
              C("test_E1_2_ddim_mean_clamps", 3,
                "s_prev^2 - sigma_t^2 <= 0 (rounding, last step) gives a finite a_prev x0_hat"))),
    Exercise("E1.3", "Base.step", 1, KERNELS, 15,
             "Base.step: the base kernel x_prev = mu_t + sigma_t eta_t with eta_t ~ N(0, I) (notebook "
             "section 2): mu_t from your ddim_mean with this step's scalars; draw eta_t with noise_like(mu_t, "
             "generator), once, so that the other kernels can reproduce this one bit for bit. Return a "
             "StepResult with its four fields x_prev, x0_hat, mu_t, eta_t (see class StepResult).",
             (C("test_E1_3_base_step_vp", 3, "one VP step: x_prev, mu_t, x0_hat, eta_t", hidden=False),
              C("test_E1_3_base_step_one_draw", 3,
                "eta_t is exactly one generator draw, nothing drawn before or after (VP and flow)"),
              C("test_E1_3_base_step_any_path", 2, "mu_t, x0_hat, x_prev at 5 steps of VP and flow grids"),
              C("test_E1_3_base_sampler_matches", 2,
                "full samplers (1 step; 9 steps, DDIM eta 0.3; 9 flow steps) match, 1 NFE per step"))),
    Exercise("E1.4", "MeanShift.step", 1, KERNELS, 15,
             "MeanShift.step (DPS): the guided step of the notebook's section 3, and the eta_t it "
             "implies through x_prev = mu_t + sigma_t eta_t. Careful: sigma_t is 0 on a deterministic "
             "schedule, and x_prev = mu_t + sigma_t eta_t then holds for any eta_t: report the drawn "
             "noise eps there.",
             (C("test_E1_4_dps_step_vp", 3,
                "x_prev = mu_t + lambda_t g_t + sigma_t eps, mu_t unguided, eta_t consistent", hidden=False),
              C("test_E1_4_dps_step_per_step_lambda", 2, "a per-step lambda_t sequence, a late step"),
              C("test_E1_4_dps_lambda_zero_is_base", 1, "lambda_t = 0 is the base sampler bit for bit"),
              C("test_E1_4_dps_deterministic_step", 2, "sigma_t = 0: finite eta_t = eps, x_prev = mu_t + lambda_t g_t"),
              C("test_E1_4_dps_raises_reward", 2, "raises the mean reward on a 6-mode ring"))),
    Exercise("E1.5", "NoiseTilt.step", 1, KERNELS, 10,
             "NoiseTilt.step (NTRK): eta_t of the notebook's section 4, from the whitened gradient w_t "
             "(computed above) and the fresh noise eps. Choose the two weights so that eta_t is exactly "
             "N(0, I) when w_t is itself white noise (what must their squares sum to?); rho = 0 must give "
             "eps bit for bit.",
             (C("test_E1_5_ntrk_mixing_rho_half", 3, "the mixing identity at rho_t = 0.5", hidden=False),
              C("test_E1_5_ntrk_mixing_identity", 2, "the mixing identity at rho_t = 0.3 and 1, custom whiten"),
              C("test_E1_5_ntrk_rho_zero_is_base", 2, "rho_t = 0 is the base sampler bit for bit"),
              C("test_E1_5_ntrk_unit_variance", 3, "E||eta_t||^2/d = 1 +- 0.05 at rho_t = 0.2, 0.8 for white w_t"))),
    Exercise("E1.6", "eta_energy_per_step", 1, EX01, 5,
             "eta_energy_per_step: from the per-step eta_t of the trace (each of shape (B, ...)) compute "
             "the lens E||eta_t||^2 / d of the notebook's section 5: one number per step, 1.0 for white "
             "noise, whatever the sample shape.",
             (C("test_E1_6_eta_energy_flat", 2, "matches metrics.eta_energy on (B, d) samples", hidden=False),
              C("test_E1_6_eta_energy_any_shape", 3, "image-shaped (B, C, H, W) samples, other lengths"))),
    # ---- sheet 2: whitening (50 points) -------------------------------------------------------------
    Exercise("E2.1", "order_stat_bounds_np", 2, WHITENING, 20,
             "2OS bounds (float64 numpy, shape (M, D)): the notebook's section 1 formula for L, nested "
             "Beta quantiles (special.betaincinv) mapped by Phi^-1 (special.ndtri); ranks r = 1..M over "
             "the tiles (outer, at alpha/2), orders j = 1..D within a tile (inner; broadcast to (M, D)). "
             "U follows from L by the symmetry of N(0, 1). Define L and U; the lines below freeze them.",
             (C("test_E2_1_bounds_small", 4, "1x1: L = Phi^-1(alpha/2); 3x2: shape, finite", hidden=False),
              C("test_E2_1_bounds_recorded", 4, "recorded values at M = 256, D = 64, alpha = 1e-4 (to 2e-6)"),
              C("test_E2_1_bounds_symmetry_and_order", 3, "U = -L[::-1, ::-1], L < U, monotone in r and j"),
              C("test_E2_1_bounds_coverage", 4, "Monte Carlo: each tail has frequency alpha/2 +- 0.015"))),
    Exercise("E2.2", "project_tiles", 2, WHITENING, 25,
             ("2OS sort, rows: sort the entries of every tile (last dim) once, stably (ties in index "
              "order), keeping the permutation: define S_all (values) and i_row (indices); you need i_row "
              "to undo this sort at the end.",
              "2OS sort, columns: sort the row-sorted tiles S over the tiles (dim -2), stably: define Z "
              "(Z[r, j] = the r-th smallest j-th order statistic) and i_col.",
              "2OS clip + unsort columns: for the tile matrices flagged in `changed`, clip their Z into the "
              "box [Lp, Up] (define Zc) and keep only their rows of i_col; then undo the column sort (the "
              "inverse of a sort is a scatter with its indices) to define S_new, shaped like Zc.",
              "2OS unsort rows: undo the within-tile sort of S_all with i_row (the inverse permutation, a "
              "scatter along the sorted dim) to define out, shape (B, M, D)."),
             (C("test_E2_2_projection_small", 5, "one tile: clips into [L, U]; 6x5 structured inputs land in the set",
                hidden=False),
              C("test_E2_2_projection_matches_reference", 6, "structured inputs at 6x5, 1x9, 16x8: in the set, equal "
                "to the reference, same pass counts"),
              C("test_E2_2_points_of_set_unchanged", 3, "points of the set come back bit for bit, 0 passes"),
              C("test_E2_2_float32_and_equivariant", 3, "float32 in and out; permuting tiles permutes the output"),
              C("test_E2_2_single_pass", 3, "repeat=False: the paper's single pass equals the reference"))),
    Exercise("E2.3", "stage_means", 2, WHITENING, 15,
             "tile-means stage (notebook section 3): the tile means times sqrt(D) are N(0, 1) for white "
             "noise, so project those M values with project_vector(m, alpha, max_passes) and move each "
             "tile as a whole so that its mean follows (scale back to the tile means first); leave tiles "
             "whose mean did not move bit for bit unchanged (torch.where).",
             (C("test_E2_3_one_atypical_tile", 5, "one atypical tile: it moves into the set, the rest stay",
                hidden=False),
              C("test_E2_3_three_kinds_of_atypical_means", 6,
                "three kinds of atypical means: means in their set, deviations kept, equal to the reference"),
              C("test_E2_3_typical_tiles_bit_for_bit", 4, "typical samples come back bit for bit"))),
    # ---- sheet 3: measuring honestly (50 points) -------------------------------------------------------
    Exercise("E3.1", "poly_kernel_sum", 3, METRICS, 15,
             "polynomial-kernel sum (notebook section 1): for the rows a[s:s + block] of this block, the "
             "kernel values k(a_i, b_j) = (gamma a_i.b_j + coef0)^degree against every row of b, added to "
             "total; with drop_diagonal (a is b) the terms i = j must not count: inside this block, row i "
             "of the kernel matrix is a's row s + i.",
             (C("test_E3_1_poly_sum_small", 3, "one block: the kernel sum and the sum without the diagonal",
                hidden=False),
              C("test_E3_1_poly_sum_blocks", 4, "several row blocks (block < m), with and without the diagonal"),
              C("test_E3_1_poly_sum_kernel_parameters", 3, "other degree, gamma, coef0; float32 features"))),
    Exercise("E3.2", "mmd2_poly", 3, METRICS, 10,
             "MMD^2 from the three kernel sums (notebook section 1, the KID equation): the within-set means "
             "of k over pairs i != j when unbiased (how many such pairs are there?), over all pairs "
             "otherwise; the cross-set mean over all m n pairs.",
             (C("test_E3_2_mmd2_small", 3, "equals the brute-force unbiased MMD^2 (m = n)", hidden=False),
              C("test_E3_2_mmd2_unbiased_on_equal_laws", 4,
                "mean 0 over 200 pairs of sets from one law (within 3 standard errors)"),
              C("test_E3_2_mmd2_biased_option_and_sizes", 3, "unbiased=False is the V-statistic; m != n"))),
    Exercise("E3.3", "tost", 3, PROTOCOL, 15,
             "TOST (notebook section 2): two one-sided t tests on the paired differences d, of "
             "H0: mean <= -margin and of H0: mean >= +margin (Student t with n - 1 degrees of freedom, "
             "standard error sd / sqrt(n), scipy.stats.t). Equivalence is shown only when both reject: "
             "which of the two p-values is the test's p? If every d is equal (sd = 0), decide by "
             "|mean| < margin.",
             (C("test_E3_3_tost_against_the_library", 4, "p on two sets of paired differences", hidden=False),
              C("test_E3_3_tost_matches_reference", 5, "p on 8 cases (n, mean, spread, margin)"),
              C("test_E3_3_tost_ci_duality", 3, "passes iff the 90% CI lies inside (-margin, margin), 40 cases"),
              C("test_E3_3_tost_edge_cases", 3, "zero spread inside/outside the margin; p(d) = p(-d)"))),
    Exercise("E3.4", "verdict", 3, PROTOCOL, 15,
             "verdict labels (notebook section 2): continue the if/elif chain above with the three outcomes "
             "for enough paired seeds: win when the whole paired CI [lo, hi] lies on the good side of 0, "
             "lose when it lies on the bad side, equivalent when TOST passed (passed), undecided otherwise. "
             "good() knows whether higher is better; decide win/lose before equivalent.",
             (C("test_E3_4_verdict_four_labels", 5, "win, lose, equivalent, undecided (higher is better)",
                hidden=False),
              C("test_E3_4_verdict_lower_is_better", 4, "the four labels when lower is better"),
              C("test_E3_4_verdict_win_before_equivalent", 3,
                "a CI that excludes 0 and lies inside the margin is win/lose, both directions"),
              C("test_E3_4_verdict_missing_seeds", 3, "too few paired seeds stays undecided, numbers kept"))),
)
del C

BY_ID = {e.id: e for e in EXERCISES}
BY_NAME = {e.name: e for e in EXERCISES}


def sheet_exercises(sheet: int) -> tuple[Exercise, ...]:
    return tuple(e for e in EXERCISES if e.sheet == sheet)


def sheet_points(sheet: int) -> float:
    return sum(e.points for e in sheet_exercises(sheet))


def criterion_of(test: str) -> tuple[Exercise, Criterion]:
    """The exercise and criterion a test function grades (a test missing here is an error)."""
    for e in EXERCISES:
        for c in e.criteria:
            if c.test == test:
                return e, c
    raise KeyError(f"test {test!r} is in no rubric criterion (assignments/grader/rubric.py)")


def markdown_table(sheet: int | None = None) -> str:
    """The rubric as a markdown table (the teachers' guide renders it from here)."""
    rows = ["| id | exercise | points | criterion | test | shown |", "|---|---|---:|---|---|---|"]
    for e in EXERCISES:
        if sheet is not None and e.sheet != sheet:
            continue
        for k, c in enumerate(e.criteria):
            head = f"| {e.id} | `{e.name}` ({e.points:g}) |" if k == 0 else "| | |"
            what = c.what.replace("|", "\\|")               # a literal | would end the table cell
            rows.append(f"{head} {c.points:g} | {what} | `{c.test}` | "
                        f"{'after due date' if c.hidden else 'public'} |")
    return "\n".join(rows)
