"""Variant QC: genotype counts, dosage sums, the exact HWE test and the allelic test."""
