"""The page's words: messages, labels, example questions (Chinese, as the page shows them)."""

from __future__ import annotations

LOGIN_MESSAGE = "请登录：读者可以提问，编辑者还可以上传和删除文档。"
EDITORS_ONLY = "只有编辑者可以上传或删除文档；请用编辑者账号登录。"
READ_ONLY = (
    "这个服务器的文档是只读的：它对本机以外开放，却没有启用登录。"
    "管理员可以用 qa users add 名字 --role editor --auth users.tsv 添加编辑者，再用 qa serve --auth users.tsv 启动。"
)
UPLOAD_FORMATS = ".txt / .md / .html / .pdf / .docx / .doc / .xlsx / .pptx，扫描件 .png / .jpg / .tif"
# Questions the seed corpus answers (checked by tests/test_ui.py).
EXAMPLES = (
    "上海全市核酸筛查采样了多少人",
    "人类战胜传染病最有效的办法是什么",
    "张文宏医生在微博上把这次疫情比作了什么",
    "温杯烫盏是什么意思",
    "How many medical workers did 15 provinces send to support Shanghai?",
)
VIEWER_HINT = "点击回答中的“来源”，在这里查看原文，并定位到那一段。"
MODE_CHOICES = [("混合（语义 + 关键词）", "hybrid"), ("语义", "dense"), ("关键词", "lexical")]
DOC_HEADERS = ["标题", "文件", "段落数"]
FONTS = ["PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei", "system-ui", "sans-serif"]
