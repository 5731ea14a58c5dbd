"""Streamlit entry point: ``streamlit run app.py`` (or ``make app``).

Two pages share one set of models per process and work on the collection picked in the
sidebar (rendered here, before the page, so both show it); everything else lives in the
``rag`` library.
"""

import streamlit as st

from app_pages.collections import collection_sidebar

st.set_page_config(page_title="Document chat", page_icon=":material/forum:", layout="wide")

navigation = st.navigation(
    [
        st.Page("app_pages/chat.py", title="Chat", icon=":material/forum:", default=True),
        st.Page("app_pages/documents.py", title="Documents", icon=":material/description:"),
    ]
)
collection_sidebar()
navigation.run()
