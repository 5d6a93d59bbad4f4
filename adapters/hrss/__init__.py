"""Human Resources and Social Security (人力资源和社会保障局)."""
