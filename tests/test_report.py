"""The report's observations are computed from the result tables, both ways round."""

import pandas as pd

from anatcl_core.report import observations

LABELS = {"random": "random init", "anatcl_global": "AnatCL-global"}


def _tables(random_bacc: float):
    bacc = pd.DataFrame({"ad": [0.8, random_bacc], "average": [0.81, random_bacc]}, index=["anatcl_global", "random"])
    brain_age = pd.DataFrame({"MAE internal": [4.0, 8.0], "MAE external": [12.0, 20.0]},
                             index=["anatcl_global", "random"])
    return bacc, brain_age


def test_floor_above_trained_methods_is_said_plainly():
    found = observations(*_tables(0.84), LABELS)
    assert "at or above every trained method" in found[0] and "0.840" in found[0] and "AnatCL-global" in found[0]
    assert "2.5-3.0 times" in found[1] and "12.0-20.0 years" in found[1]


def test_trained_method_above_floor():
    found = observations(*_tables(0.70), LABELS)
    assert found[0].startswith("The best trained method on diagnosis, AnatCL-global (0.810), is +0.110 above")


def test_missing_columns_give_no_finding():
    assert observations(pd.DataFrame(), pd.DataFrame(), LABELS) == []
