"""Every command a README names answers a bad flag with one `error:` line and exit 2."""

import importlib

import pytest

# (module whose main(argv) the command runs, the README's command)
COMMANDS = [
    ("dataset.pre_training.download_dataset", "python3 -m dataset.pre_training.download_dataset"),
    ("dataset.post_training.sft.download_dataset", "python3 -m dataset.post_training.sft..."),
    ("dataset.post_training.dpo.download_dataset", "python3 -m dataset.post_training.dpo..."),
    ("dataset.evaluation.download_dataset", "python3 -m dataset.evaluation.download_dataset"),
    ("tokenizer.train", "python3 -m tokenizer.train"),
    ("tokenizer.tokenize_dataset", "python3 -m tokenizer.tokenize_dataset"),
    ("tokenizer.count_tokenized_data", "python3 -m tokenizer.count_tokenized_data"),
    ("tokenizer.inspect_tokenized_data", "python3 -m tokenizer.inspect_tokenized_data"),
    ("evaluation.cli", "python3 -m evaluation"),
    ("model.generate", "python3 -m model.generate"),
    ("model.plan", "python3 -m model.plan"),
    ("model.serve.cli", "python3 -m model.serve"),
    ("model.export.hf", "python3 -m model.export.hf"),
    ("model.export.gguf", "python3 -m model.export.gguf"),
    ("model.import_hf", "python3 -m model.import_hf"),
    ("benchmarks.time_to_loss", "python3 -m benchmarks.time_to_loss"),
]


@pytest.mark.parametrize("module", [module for module, _ in COMMANDS])
def test_a_bad_flag_is_one_line(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    # argparse's own message is the usage block, then the error: several lines
    assert err.startswith("error: ") and err.endswith(" --help)\n") and err.count("\n") == 1, err
