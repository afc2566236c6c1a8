"""Human evaluation and review: the web annotation app and its database."""
