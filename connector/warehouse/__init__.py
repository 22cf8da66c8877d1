"""The warehouse side: choosing and checking the destination, failures classified, the read copy,
the run log read back, and a sweep's SQL."""
