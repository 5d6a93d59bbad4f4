"""Civil Affairs (民政局): subsistence allowance, hardship households, disability subsidies."""
