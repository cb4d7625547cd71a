"""Airflow DAGs (optional extra ``backbeat[airflow]``) scheduling the download counts.

Point Airflow's ``dags_folder`` at this directory, or copy ``downloads_dags.py`` into it.
"""
