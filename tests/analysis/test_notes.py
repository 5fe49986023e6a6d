"""One note per cause: what a cause affects is gathered onto its line."""

from analysis.notes import Notes


def test_effects_of_one_cause_share_a_line_with_their_subjects_and_qualifiers():
    notes = Notes()
    for quantity in ("validation/loss", "toy_mc/acc"):
        for objective in ("ARM", "MDM"):
            notes.add("too few budgets", "no fit", quantity, objective)
    notes.add("too few budgets", "figures drawn without fitted curves", "loss_vs_compute")
    notes.add("every budget has a single model size")
    assert notes.lines() == [
        "no fit: validation/loss (ARM, MDM), toy_mc/acc (ARM, MDM); figures drawn without fitted curves: "
        "loss_vs_compute. Cause: too few budgets",
        "every budget has a single model size",
    ]


def test_causes_that_differ_only_in_numbers_are_one_cause_with_their_range():
    notes = Notes()
    for objective, failed in (("ARM", 42), ("MDM", 40), ("ARM", 44)):
        notes.add(f"{failed} of 200 resamples could not be fitted (seed 0)", "no fit", "validation/loss", objective)
    (line,) = notes.lines()
    assert line == "no fit: validation/loss (ARM, MDM). Cause: 40-44 of 200 resamples could not be fitted (seed 0)"


def test_different_causes_stay_apart_and_a_repeated_note_is_written_once():
    notes = Notes()
    notes.add("run r1 has no MLflow run")
    notes.add("run r1 has no MLflow run")
    notes.add("the slice is not convex", "no fit", "isoflop")
    notes.add("too few points", "no fit", "isoflop")
    assert notes.lines() == ["run r1 has no MLflow run", "no fit: isoflop. Cause: the slice is not convex",
                             "no fit: isoflop. Cause: too few points"]
    assert len(notes) == 3
