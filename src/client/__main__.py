"""`python -m src.client`: the same as the `iaas` command."""
from src.client.main import main

main()
