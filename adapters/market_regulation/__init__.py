"""Market Regulation (市场监管委): business registration."""
