"""Administrative division codes (GB/T 2260) as far as identifiers need them.

Rule (deliberately simple): a 6-digit code is known when its first two digits are one of the 34
provincial-level codes and

- for Tianjin (12), the whole code is a current or historical Tianjin code (TIANJIN_CODES);
- for any other province, the prefecture part (digits 3-4) is not '00' unless the county part
  (digits 5-6) is '00' too, as in '350100' or '110000'; no prefecture/county table is kept.

A 2-digit code is known when it is a province.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

PROVINCES: Mapping[str, str] = MappingProxyType(
    {
        "11": "北京市",
        "12": "天津市",
        "13": "河北省",
        "14": "山西省",
        "15": "内蒙古自治区",
        "21": "辽宁省",
        "22": "吉林省",
        "23": "黑龙江省",
        "31": "上海市",
        "32": "江苏省",
        "33": "浙江省",
        "34": "安徽省",
        "35": "福建省",
        "36": "江西省",
        "37": "山东省",
        "41": "河南省",
        "42": "湖北省",
        "43": "湖南省",
        "44": "广东省",
        "45": "广西壮族自治区",
        "46": "海南省",
        "50": "重庆市",
        "51": "四川省",
        "52": "贵州省",
        "53": "云南省",
        "54": "西藏自治区",
        "61": "陕西省",
        "62": "甘肃省",
        "63": "青海省",
        "64": "宁夏回族自治区",
        "65": "新疆维吾尔自治区",
        "71": "台湾省",
        "81": "香港特别行政区",
        "82": "澳门特别行政区",
    }
)
"""The 34 provincial-level divisions: 2-digit code -> name."""

TIANJIN_DISTRICTS: Mapping[str, str] = MappingProxyType(
    {
        "120101": "和平区",
        "120102": "河东区",
        "120103": "河西区",
        "120104": "南开区",
        "120105": "河北区",
        "120106": "红桥区",
        "120110": "东丽区",
        "120111": "西青区",
        "120112": "津南区",
        "120113": "北辰区",
        "120114": "武清区",
        "120115": "宝坻区",
        "120116": "滨海新区",
        "120117": "宁河区",
        "120118": "静海区",
        "120119": "蓟州区",
    }
)
"""Tianjin's 16 current districts: code -> name."""

TIANJIN_HISTORICAL: Mapping[str, str] = MappingProxyType(
    {
        "120000": "天津市",
        "120100": "天津市市辖区",
        "120107": "塘沽区",  # merged into 滨海新区 (2009)
        "120108": "汉沽区",  # merged into 滨海新区 (2009)
        "120109": "大港区",  # merged into 滨海新区 (2009)
        "120221": "宁河县",  # now 宁河区 (2015)
        "120222": "武清县",  # now 武清区 (2000)
        "120223": "静海县",  # now 静海区 (2015)
        "120224": "宝坻县",  # now 宝坻区 (2001)
        "120225": "蓟县",  # now 蓟州区 (2016)
    }
)
"""Codes no longer current (or municipal-level) that older Tianjin numbers still carry."""

TIANJIN_CODES: Mapping[str, str] = MappingProxyType({**TIANJIN_DISTRICTS, **TIANJIN_HISTORICAL})

_TIANJIN = "12"


def province_known(code: str) -> bool:
    """Whether the first two characters of ``code`` are a provincial-level code."""
    return code[:2] in PROVINCES


def division_known(code: str) -> bool:
    """Whether a 2- or 6-digit division code is known under the module's rule."""
    if len(code) == 2:
        return code in PROVINCES
    if len(code) != 6 or not code.isascii() or not code.isdigit() or code[:2] not in PROVINCES:
        return False
    if code[:2] == _TIANJIN:
        return code in TIANJIN_CODES
    return code[2:4] != "00" or code[4:6] == "00"


def division_name(code: str) -> str | None:
    """The name of a known division: the district for Tianjin codes, else the province's name
    (no prefecture or county names are kept); None when unknown."""
    if not division_known(code):
        return None
    return TIANJIN_CODES.get(code) or PROVINCES[code[:2]]
