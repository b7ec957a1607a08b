"""Review in the browser (issue 23): a page over a build's tables, and the decisions it writes."""
