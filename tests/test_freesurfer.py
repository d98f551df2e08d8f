"""FreeSurfer ROI tables: channels are picked by name, in OpenBHB's row order."""

import numpy as np
import pytest

from anatcl_core.data import freesurfer as fs


def test_region_and_channel_tables():
    assert fs.DESIKAN_SHAPE == (7, 68)
    assert fs.DESIKAN_COLUMNS[0] == "lh-bankssts" and fs.DESIKAN_COLUMNS[34] == "rh-bankssts"
    assert fs.DESIKAN_COLUMNS[-1] == "rh-insula" and len(set(fs.DESIKAN_COLUMNS)) == 68
    # REFERENCE §3: row 0 SA, 1 GMV, 2 CT; row 5 is the Gaussian (not mean) curvature.
    assert [fs.channel_index(n) for n in ("SA", "GMV", "CT")] == [0, 1, 2]
    assert "gaussian" in fs.CHANNELS[5]


def test_select_channels_picks_rows_by_name():
    table = np.arange(7 * 68, dtype=float).reshape(7, 68)  # row i holds 68*i ... 68*i+67
    picked = fs.select_channels(table, ("CT", "GMV", "SA"))
    np.testing.assert_array_equal(picked, table[[2, 1, 0]])
    batch = np.stack([table, -table])
    np.testing.assert_array_equal(fs.select_channels(batch, ["average_thickness"]), batch[:, [2]])


@pytest.mark.parametrize(
    ("table", "names", "error"),
    [
        (np.zeros((6, 68)), ("CT",), ValueError),
        (np.zeros((7, 68)), ("thickness",), KeyError),
        (np.zeros((7, 68)), (), ValueError),
        (np.zeros((7, 68)), ("CT", "average_thickness"), ValueError),
    ],
)
def test_select_channels_rejects(table, names, error):
    with pytest.raises(error):
        fs.select_channels(table, names)
