"""The public status page: what venues may know about the service, and nothing internal.

`rollup` turns incidents and maintenance windows into each component's day; `page` builds
the one snapshot that the HTML page, /status.json and the badge all render; `views` serve it.
"""
