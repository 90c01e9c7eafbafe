"""Readers and writers of genotype and sample files (PLINK 1/2, VCF, BGEN, dosage caches)."""
