"""Building our own data from installed Debian text: ``corpus`` (extractors -> corpus splits),
``tasks`` (the four evaluation suites), ``pairs`` (training pairs with hard negatives),
``concepts`` (the concept catalogue; a data table), ``documents`` (corpus-record helpers)."""
