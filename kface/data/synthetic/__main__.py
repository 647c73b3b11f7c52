from ...utils.errors import run_cli
from .cli import main, parse_args

run_cli(main, parse_args())
