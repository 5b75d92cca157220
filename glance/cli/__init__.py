"""The `glance` command line: thin Typer shells over the plain functions of the glance package.

Only light modules are imported here, so `glance --help` stays fast; each command imports torch,
diffusers or SimpleTuner inside its body when it needs them.
"""

from __future__ import annotations

import typer

from glance import __version__
from glance.cli import configs as _configs
from glance.cli import demo as _demo
from glance.cli import eval as _eval
from glance.cli import export as _export
from glance.cli import infer as _infer
from glance.cli import push as _push
from glance.cli import train as _train

app = typer.Typer(
    name="glance",
    help=(
        "Train two Glance LoRAs (slow: early, high-noise steps; fast: late steps) on ONE image and its "
        "caption with SimpleTuner, then sample them together in about ten steps with diffusers."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command's help, -h too
)

app.command("configs", epilog=_configs.EPILOG)(_configs.configs_command)
app.command("schedule", epilog=_configs.SCHEDULE_EPILOG)(_configs.schedule_command)
app.command("train", epilog=_train.EPILOG)(_train.train_command)
app.command("infer", epilog=_infer.EPILOG)(_infer.infer_command)
app.command("push", epilog=_push.EPILOG)(_push.push_command)
app.command("eval", epilog=_eval.EPILOG)(_eval.eval_command)
app.add_typer(_export.export_app)
app.command("demo", epilog=_demo.EPILOG)(_demo.demo_command)


def _version(value: bool) -> None:
    if value:
        print(f"glance {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def main() -> None:
    app()
