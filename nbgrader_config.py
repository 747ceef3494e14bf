"""The course configuration: nbgrader's settings and the kit's own, in one place.

nbgrader reads this file (the repo root is the nbgrader course directory). The kit reads the
same file through traitlets (section ``c.PPOKit``); see ``autograder/config.py``.
"""
c = get_config()  # noqa: F821  (provided by traitlets when nbgrader loads the file)

# --- nbgrader -------------------------------------------------------------------------------
c.CourseDirectory.course_id = "ppo-for-lms"
c.CourseDirectory.root = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
# SQLite gradebook under the course directory.
c.CourseDirectory.db_url = "sqlite:///" + c.CourseDirectory.root + "/gradebook.db"

c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.enforce_metadata = True
c.ExecutePreprocessor.timeout = 300
c.Execute.timeout = 300
# `nbgrader generate_feedback` renders the kit's feedback page (the one grade-course writes),
# with the gradebook's manual points, comments and late penalty: students get one page.
import sys  # noqa: E402
if c.CourseDirectory.root not in sys.path:
    sys.path.append(c.CourseDirectory.root)
c.GenerateFeedback.exporter_class = "autograder.course.nbgrader_feedback.KitFeedbackExporter"
# Late submissions: nbgrader's penalty ("none" or "zero"), applied against the due date set with
# `nbgrader db assignment add <assignment> --duedate="YYYY-MM-DD HH:MM:SS UTC"`.
c.LateSubmissionPlugin.penalty_method = "none"

# --- the kit (python -m autograder) -----------------------------------------------------------
# Rotate cohort_seed for every new cohort: the unit tests' hidden inputs derive from
# (cohort_seed, student id, test name, the student's code), bandits and training seeds from
# (cohort_seed, student id, test name).
c.PPOKit.cohort_seed = 20261123
# "auto" picks CUDA when torch sees a GPU, else the CPU.
c.PPOKit.device = "auto"
# "auto": bubblewrap when it runs here, else the uid-drop + rlimits fallback.
c.PPOKit.sandbox = "auto"
c.PPOKit.jobs = 2
# Limits for one sandboxed worker (one submission).
c.PPOKit.limits = dict(
    cpu_seconds=120,        # RLIMIT_CPU for the whole worker
    wall_seconds=180,       # the whole worker, from spawn to exit
    call_timeout_seconds=30,  # one call of a student function (or one harness run: see below)
    harness_timeout_seconds=120,
    memory_mb=3072,         # RLIMIT_AS; torch's own mappings need about 1 GB of address space
    max_processes=64,       # RLIMIT_NPROC (per uid inside the sandbox)
    max_open_files=256,     # RLIMIT_NOFILE
    max_file_mb=64,         # RLIMIT_FSIZE
    max_output_kb=64,       # captured stdout+stderr kept per worker
)

# --- the Gradescope bundle (python -m autograder gradescope-bundle) ----------------------------
# Who sees what on Gradescope: one of "visible", "after_due_date", "after_published", "hidden".
c.PPOKit.gradescope_visibility = "visible"           # the whole result
c.PPOKit.gradescope_test_visibility = {}             # {grade cell id or test name: visibility}
c.PPOKit.gradescope_stdout_visibility = "hidden"     # the staff log (results/stdout)
