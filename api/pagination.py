"""Query parameters of every list: `?page_size=` (default 50, max 500) and `?page_token=`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from domain.inputs import DigitsInt

PageSize = Annotated[DigitsInt, Query(ge=1, le=500, description="Items per page (default 50, max 500).")]
PageToken = Annotated[str | None, Query(max_length=1000, description="The `next_page_token` of the previous page.")]
