"""Notebook hygiene: one typed `parameters` cell, every profile key a real parameter, no stale outputs."""

import ast

import nbformat
import papermill
import pytest

from shamsul_utils.chain import CHAIN, NOTEBOOK_FOLDER, available_notebooks

SOURCES = sorted(NOTEBOOK_FOLDER.glob("[0-9][0-9]_*.ipynb"))


def test_every_numbered_notebook_is_in_the_chain_except_the_explorer():
    """The chain runs every numbered notebook in order; only the interactive explorer (09) is
    left to the reader. A notebook added without a place in CHAIN, or a CHAIN entry without its
    notebook, fails here."""
    stems = [path.stem for path in SOURCES]
    assert available_notebooks() == list(CHAIN)
    assert set(stems) - set(CHAIN) == {"09_workshop_explorer"}
    assert [stem for stem in stems if stem in CHAIN] == list(CHAIN)  # in file-name order


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.stem)
def test_source_notebooks_have_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    stale = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count)]
    assert not stale, f"{path.name}: cells {stale} carry outputs; clear them (executed copies live in notebooks/executed/)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.stem)
def test_parameters_cell_is_typed_and_commented(path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    for line in tagged[0].source.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        statement = ast.parse(line.split("#")[0]).body[0]
        assert isinstance(statement, ast.AnnAssign), f"{path.name}: '{line}' is not 'name: type = literal'"
        ast.literal_eval(statement.value)
        assert "#" in line, f"{path.name}: '{line}' has no comment"
    assert not any("def " in cell.source for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name}: notebooks define no functions (logic belongs in shamsul_utils)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.stem)
def test_every_key_the_chain_passes_is_a_parameter(path):
    # papermill only warns about unknown parameters; the chain passes these keys to every notebook.
    passed = {"profile"}
    declared = set(papermill.inspect_notebook(str(path)))
    assert passed <= declared, f"{path.name}: the chain passes {sorted(passed - declared)} but the notebook lacks them"
