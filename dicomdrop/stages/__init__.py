"""Pipeline stages that sort, group and screen the files of a drop before de-identification."""
