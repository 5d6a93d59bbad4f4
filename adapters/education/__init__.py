"""Education (教育委员会): higher-education graduation records."""
