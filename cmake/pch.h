// Precompiled header shared by every engine target (see cmake/LiveavatarTargets.cmake).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <map>
#include <memory>
#include <string>
#include <vector>
