"""OpenBHB reader: split selection, str ids, channels by name, in-memory == lazy, ROI CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from anatcl_core.data import layout
from anatcl_core.data.freesurfer import CHANNELS, DESIKAN_COLUMNS
from anatcl_core.data.openbhb import OpenBHB, read_participants, read_roi_csv
from conftest import SPLIT_SIZES


@pytest.mark.parametrize(
    "split, expected",
    [("train", SPLIT_SIZES[0]), ("internal_test", SPLIT_SIZES[1]), ("external_test", SPLIT_SIZES[2]),
     (("internal_test", "external_test"), SPLIT_SIZES[1] + SPLIT_SIZES[2]), (list(layout.SPLITS), sum(SPLIT_SIZES))],
)  # fmt: skip
def test_split_selection(openbhb_root, split, expected):
    dataset = OpenBHB(openbhb_root, split=split)
    splits = {split} if isinstance(split, str) else set(split)
    assert len(dataset) == expected
    assert set(dataset.participants["split"]) == splits
    for i in range(len(dataset)):  # each file comes from its split's folder
        assert f"/{layout.SPLIT_FOLDER[dataset.participants['split'][i]]}/derivatives/" in str(dataset.path(i))


def test_unknown_split_is_an_error(openbhb_root):
    with pytest.raises(ValueError, match="split must be one or more of"):
        OpenBHB(openbhb_root, split="val")


def test_ids_are_str_with_leading_zeros(openbhb_root):
    dataset = OpenBHB(openbhb_root)
    assert pd.api.types.is_string_dtype(dataset.participants["participant_id"])
    assert dataset.participants["participant_id"].tolist() == [f"{i:04d}" for i in range(1, 7)]
    assert dataset[0]["participant_id"] == "0001"
    assert read_participants(openbhb_root)["participant_id"].iloc[-1] == "0012"


def test_item_matches_files(openbhb_root):
    dataset = OpenBHB(openbhb_root, split="internal_test", channels=("SA", "CT"))
    item = dataset[1]
    row = dataset.participants.iloc[1]
    table = np.load(layout.subject_file(openbhb_root, "internal_test", row["participant_id"], layout.DESIKAN_KIND))
    volume = np.load(layout.subject_file(openbhb_root, "internal_test", row["participant_id"], layout.VBM_KIND))
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 21, 22, 21)
    np.testing.assert_array_equal(item["image"].numpy(), volume[:, :, 1:23, :])
    # channels by name: SA is row 0, CT (average thickness) is row 2, in the order asked
    np.testing.assert_array_equal(item["descriptors"].numpy(), table[[0, 2]])
    assert item["age"] == pytest.approx(row["age"]) and item["sex"] == row["sex"] and item["site"] == row["site"]
    assert dataset.descriptor_tables().shape == (SPLIT_SIZES[1], 7, 68)
    with pytest.raises(KeyError, match="unknown FreeSurfer channel"):
        OpenBHB(openbhb_root, channels=("thickness",))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_in_memory_equals_lazy(openbhb_root, dtype):
    lazy = OpenBHB(openbhb_root, split=["train", "external_test"])
    stack = lazy.images(dtype=dtype, progress=False)
    assert stack.dtype == dtype and stack.shape == (len(lazy), 1, 21, 22, 21)
    memory = OpenBHB(openbhb_root, split=["train", "external_test"], in_memory=True, dtype=dtype)
    for i in range(len(lazy)):
        expected = lazy[i]["image"].numpy()
        np.testing.assert_array_equal(stack[i], expected.astype(dtype))
        np.testing.assert_array_equal(memory[i]["image"].numpy(), expected.astype(dtype).astype(np.float32))
        assert memory[i]["image"].dtype == torch.float32


def test_dataloader_batches(openbhb_root):
    batch = next(iter(DataLoader(OpenBHB(openbhb_root), batch_size=4)))
    assert batch["image"].shape == (4, 1, 21, 22, 21) and batch["descriptors"].shape == (4, 3, 68)
    assert batch["participant_id"] == ["0001", "0002", "0003", "0004"]


def test_roi_csv_is_channel_major(openbhb_root, tmp_path):
    dataset = OpenBHB(openbhb_root)
    tables = dataset.descriptor_tables()  # (N, 7, 68)
    columns = [f"{c}_{r}" for c in CHANNELS for r in DESIKAN_COLUMNS]  # channel-major
    frame = pd.DataFrame(tables.reshape(len(tables), -1), columns=columns)
    frame.insert(0, "session", 1)
    frame.insert(0, "participant_id", dataset.participants["participant_id"])
    frame.to_csv(tmp_path / "train_desikan.csv", index=False)
    ids, read = read_roi_csv(tmp_path / "train_desikan.csv")
    assert ids == dataset.participants["participant_id"].tolist()
    np.testing.assert_array_equal(read, tables)
    assert read[0, 2, 5] == frame.loc[0, f"average_thickness_{DESIKAN_COLUMNS[5]}"]
    from_csv = OpenBHB(openbhb_root, roi_csv=tmp_path / "train_desikan.csv")
    np.testing.assert_array_equal(from_csv[3]["descriptors"].numpy(), dataset[3]["descriptors"].numpy())
    frame.iloc[:, :-1].to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="475 value columns; expected a multiple of 7"):
        read_roi_csv(tmp_path / "bad.csv")


def test_vbm_array_layouts(openbhb_root):
    """(1, X, Y, Z), (X, Y, Z) and (1, 1, X, Y, Z) files read the same."""
    path = layout.subject_file(openbhb_root, "train", "0002", layout.VBM_KIND)
    expected = OpenBHB(openbhb_root)[1]["image"]
    volume = np.load(path)[0]
    for stored in (volume, volume[None, None]):
        np.save(path, stored)
        torch.testing.assert_close(OpenBHB(openbhb_root)[1]["image"], expected, rtol=0, atol=0)


def test_sex_has_one_coding_text_and_numbers_alike():
    """1 male, 0 female: the synthetic cohort's numbers and a real table's words mean the same."""
    import pandas as pd

    from anatcl_core.data.openbhb import encode_sex

    codes = encode_sex(pd.Series(["male", "F", "1", "0.0", "M", "female"]), "participants.tsv")
    assert codes.tolist() == [1, 0, 1, 0, 1, 0]
