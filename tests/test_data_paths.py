"""mrcnn_edu.data.paths: explicit > $MRCNN_EDU_DATA > data/coco_subset > ../shared/coco_subset."""
import pytest

from mrcnn_edu.data import paths, resolve_data_root


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """A fake repository at tmp/work/repo with every candidate directory present."""
    repo = tmp_path / "work" / "repo"
    dirs = {"explicit": tmp_path / "explicit", "env": tmp_path / "env",
            "repo": repo / "data" / "coco_subset",
            "shared": tmp_path / "work" / "shared" / "coco_subset"}
    for d in dirs.values():
        d.mkdir(parents=True)
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.setenv(paths.ENV_VAR, str(dirs["env"]))
    return dirs


def test_explicit_wins(layout):
    assert resolve_data_root(layout["explicit"]) == layout["explicit"].resolve()
    assert resolve_data_root(str(layout["explicit"])) == layout["explicit"].resolve()


def test_environment_variable_next(layout):
    assert resolve_data_root() == layout["env"].resolve()


def test_repo_data_next(layout, monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR)
    assert resolve_data_root() == layout["repo"].resolve()


def test_empty_environment_variable_is_unset(layout, monkeypatch):
    monkeypatch.setenv(paths.ENV_VAR, "")
    assert resolve_data_root() == layout["repo"].resolve()


def test_shared_copy_last(layout, monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR)
    layout["repo"].rmdir()
    assert resolve_data_root() == layout["shared"].resolve()


def test_nothing_found_says_how_to_build(layout, monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR)
    layout["repo"].rmdir()
    layout["shared"].rmdir()
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_root()
    message = str(err.value)
    assert str(layout["repo"]) in message and str(layout["shared"]) in message
    assert "python -m mrcnn_edu.data subset" in message and paths.ENV_VAR in message


def test_missing_explicit_is_an_error_not_a_fallback(layout, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--data.*does not exist.*typo"):
        resolve_data_root(tmp_path / "typo")


def test_missing_environment_path_is_an_error(layout, monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"MRCNN_EDU_DATA.*nowhere"):
        resolve_data_root()


def test_user_home_is_expanded(layout, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/explicit") == layout["explicit"].resolve()


def test_default_candidates_are_beside_the_repo():
    repo = paths.REPO_ROOT
    assert (repo / "mrcnn_edu" / "data" / "paths.py").is_file()
    assert paths.default_candidates() == [repo / "data" / "coco_subset",
                                          repo.parent / "shared" / "coco_subset"]
